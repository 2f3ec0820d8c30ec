"""The modelhub SDK over HTTP, synchronous (`ModelhubClient`) and asynchronous (`AsyncModelhubClient`).

It imports no server module: httpx only. The server and identity come from the arguments or from
`MODELHUB_URL`, `MODELHUB_TOKEN` (bearer token) and `MODELHUB_ENGINEER` (X-Engineer-ID, header mode).
Every error the server reports is raised as a typed `ModelhubError` subclass carrying its `code`.

Downloads go to `<dest>.part` (with `<dest>.part.json` saying which version, ETag and download it came
from), resume with `Range` + `If-Range` and `requestDownload(resumes:)` so that the server counts one
download, are checked for size and SHA-256, and are renamed into place atomically. A checksum mismatch
deletes the partial file and starts over once; a second one raises `ChecksumMismatchError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

CHUNK = 1024 * 1024
DEFAULT_URL = "http://127.0.0.1:8000"
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


# --- errors -------------------------------------------------------------------------------------------


class ModelhubError(Exception):
    """The server refused a request (a typed result error, a top-level GraphQL error, an HTTP error), or
    could not be reached. `code` is the server's machine-readable code."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class NotFoundError(ModelhubError):
    """No such model, version, alias, object or upload."""


class InvalidInputError(ModelhubError):
    """An argument was refused; `details.get("field")` names it when the server did."""


class AlreadyExistsError(ModelhubError):
    """The version number is taken."""


class ArchivedError(ModelhubError):
    """The version is archived: no downloads."""


class ChecksumMismatchError(ModelhubError):
    """The bytes are not those whose SHA-256 was declared (server side, or after a download)."""


class ArtifactChangedError(ModelhubError):
    """The object behind the version changed in the store since it was registered."""


class AuthError(ModelhubError):
    """Not authenticated, or not allowed."""


class RateLimitedError(ModelhubError):
    """Too many requests; try again later."""


class UnavailableError(ModelhubError):
    """The server, its database or its object store cannot be reached now; try again."""


ERRORS: dict[str, type[ModelhubError]] = {
    **dict.fromkeys(
        [
            "MODEL_NOT_FOUND",
            "MODEL_VERSION_NOT_FOUND",
            "ALIAS_NOT_FOUND",
            "STORAGE_OBJECT_NOT_FOUND",
            "UPLOAD_NOT_FOUND",
            "NOT_FOUND",
        ],
        NotFoundError,
    ),
    **dict.fromkeys(
        [
            "INVALID_INPUT",
            "BAD_USER_INPUT",
            "BAD_REQUEST",
            "GRAPHQL_VALIDATION_FAILED",
            "GRAPHQL_PARSE_FAILED",
        ],
        InvalidInputError,
    ),
    "MODEL_VERSION_ALREADY_EXISTS": AlreadyExistsError,
    "MODEL_VERSION_ARCHIVED": ArchivedError,
    "CHECKSUM_MISMATCH": ChecksumMismatchError,
    "ARTIFACT_CHANGED": ArtifactChangedError,
    "UNAUTHENTICATED": AuthError,
    "FORBIDDEN": AuthError,
    "RATE_LIMITED": RateLimitedError,
    **dict.fromkeys(
        ["DATABASE_UNAVAILABLE", "DATABASE_TIMEOUT", "STORAGE_UNAVAILABLE", "UNREACHABLE"], UnavailableError
    ),
}


def error_for(code: str, message: str, details: dict[str, Any] | None = None) -> ModelhubError:
    return ERRORS.get(code, ModelhubError)(code, message, details)


def unreachable(base_url: str, exc: httpx.HTTPError) -> UnavailableError:
    return UnavailableError("UNREACHABLE", f"cannot reach {base_url} ({type(exc).__name__})")


# --- GraphQL documents ---------------------------------------------------------------------------------

VERSION_FIELDS = """name version projectName owner description tags sizeBytes sha256 checksumStatus
      checksumError storageUri createdAt archived aliases downloadCount"""
ERROR_FIELDS = "... on UserError { __typename code message } ... on InvalidInput { field }"

REQUEST_DOWNLOAD = f"""
mutation RequestDownload($input: RequestDownloadInput!) {{
  requestDownload(input: $input) {{
    __typename
    ... on DownloadTicket {{
      url mode expiresAt
      download {{ id version sizeBytes modelVersion {{ etag sha256 checksumStatus }} }}
    }}
    {ERROR_FIELDS}
  }}
}}"""

REGISTER = f"""
mutation RegisterModel($input: RegisterModelInput!) {{
  registerModel(input: $input) {{
    __typename
    ... on ModelVersion {{ id {VERSION_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}"""

REQUEST_UPLOAD = f"""
mutation RequestUpload($input: RequestUploadInput!) {{
  requestUpload(input: $input) {{
    __typename
    ... on UploadTicket {{
      uploadId url headers {{ name value }} parts {{ partNumber url sizeBytes }} partSizeBytes expiresAt
    }}
    {ERROR_FIELDS}
  }}
}}"""

COMPLETE_UPLOAD = f"""
mutation CompleteUpload($input: CompleteUploadInput!) {{
  completeUpload(input: $input) {{
    __typename
    ... on ModelVersion {{ id {VERSION_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}"""

MODELS = """
query ListModels($first: Int!, $after: String, $filter: ModelFilter) {
  models(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage endCursor }
    nodes {
      name projectName owner description tags createdAt updatedAt downloadCount
      latestVersion { version sizeBytes sha256 checksumStatus }
      aliases { alias version }
    }
  }
}"""

INFO = f"""
query Info($name: String!, $version: Int, $alias: String) {{
  modelVersion(name: $name, version: $version, alias: $alias) {{
    {VERSION_FIELDS} metadata etag contentType lastDownloadedAt
    model {{ description downloadCount aliases {{ alias version }} }}
  }}
  model(name: $name) {{ name }}
}}"""

STATS = """
query Stats(
  $groupBy: [DownloadDimension!]!, $interval: TimeInterval, $filter: DownloadFilter, $after: String
) {
  downloadStats(groupBy: $groupBy, interval: $interval, filter: $filter, limit: 1000, after: $after,
                orderBy: {field: DOWNLOADS, direction: DESC}) {
    source
    pageInfo { hasNextPage endCursor }
    rows { modelName version projectName engineer mode status periodStart downloads completed aborted failed
           totalBytes uniqueEngineers avgDurationSeconds p95DurationSeconds }
  }
}"""

DOCUMENTS = {
    "REQUEST_DOWNLOAD": REQUEST_DOWNLOAD,
    "REGISTER": REGISTER,
    "REQUEST_UPLOAD": REQUEST_UPLOAD,
    "COMPLETE_UPLOAD": COMPLETE_UPLOAD,
    "MODELS": MODELS,
    "INFO": INFO,
    "STATS": STATS,
}


# --- shared, I/O-free pieces ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    version: int
    size: int
    bytes_written: int
    resumed_from: int
    sha256: str
    # Whether `sha256` was compared with the server's (False while the server has not hashed the object).
    verified: bool
    seconds: float


@dataclass(frozen=True)
class Ticket:
    url: str
    download_id: str
    version: int
    size: int
    etag: str
    sha256: str | None


def _headers(engineer: str | None, token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "modelhub-sdk/0.2"}
    engineer = engineer if engineer is not None else os.environ.get("MODELHUB_ENGINEER")
    token = token if token is not None else os.environ.get("MODELHUB_TOKEN")
    if engineer:
        headers["X-Engineer-ID"] = engineer
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("MODELHUB_URL") or DEFAULT_URL).rstrip("/")


def _graphql_data(resp: httpx.Response) -> dict[str, Any]:
    if "application/json" not in resp.headers.get("content-type", ""):
        raise error_for(f"HTTP_{resp.status_code}", resp.text[:200] or resp.reason_phrase)
    body = resp.json()
    if body.get("errors"):
        error = body["errors"][0]
        extensions = error.get("extensions") or {}
        raise error_for(extensions.get("code", "GRAPHQL_ERROR"), error["message"], extensions)
    data: dict[str, Any] = body["data"]
    return data


def _result(value: dict[str, Any]) -> dict[str, Any]:
    """A mutation's result union: the success member, or its error member raised as a typed exception."""
    if "code" in value and "message" in value:
        details = {k: v for k, v in value.items() if k not in ("code", "message")}
        raise error_for(value["code"], value["message"], details)
    return value


def _http_error(resp: httpx.Response) -> ModelhubError:
    """An error answer of a download or upload URL (our JSON errors, or S3's XML)."""
    try:
        error = resp.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    return error_for(error.get("code", f"HTTP_{resp.status_code}"), error.get("message", resp.text[:200]))


def _ticket(value: dict[str, Any]) -> Ticket:
    download = value["download"]
    version = download.get("modelVersion") or {}
    return Ticket(
        url=value["url"],
        download_id=download["id"],
        version=int(download["version"]),
        size=int(download["sizeBytes"]),
        etag=version.get("etag") or "",
        sha256=version.get("sha256") if version.get("checksumStatus") == "VERIFIED" else None,
    )


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`NAME`, `NAME@3` or `NAME@prod` → (name, version, alias)."""
    name, _, at = ref.partition("@")
    if not at:
        return name, None, None
    if at.isdigit():
        return name, int(at), None
    return name, None, at


def _resolve(ref: str, version: int | None, alias: str | None) -> tuple[str, int | None, str | None]:
    """A name, or a `NAME@VERSION` / `NAME@ALIAS` ref when no version or alias is given separately
    (names never contain @)."""
    if version is None and alias is None:
        return parse_ref(ref)
    return ref, version, alias


def file_digest(path: Path, progress: Progress | None = None) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    total = path.stat().st_size
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
            size += len(block)
            if progress:
                progress(size, total)
    return size, digest.hexdigest()


class _Partial:
    """The `.part` file of a download and what it came from (`.part.json`)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.meta = dest.with_name(dest.name + ".part.json")

    def resumable(self, name: str, ticket_version: int | None) -> tuple[int, dict[str, Any]]:
        """How many bytes of the same model (and version, when known) are already here, and their record."""
        if not self.part.exists():
            return 0, {}
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            meta = {}
        same = meta.get("name") == name and (ticket_version is None or meta.get("version") == ticket_version)
        if not same:
            self.discard()
            return 0, {}
        return self.part.stat().st_size, meta

    def record(self, name: str, ticket: Ticket) -> None:
        meta = {"name": name, "version": ticket.version, "etag": ticket.etag, "download": ticket.download_id}
        self.meta.write_text(json.dumps(meta))

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)

    def open_at(self, offset: int) -> BinaryIO:
        fh = self.part.open("r+b" if offset and self.part.exists() else "wb")
        fh.seek(offset)
        fh.truncate()
        return fh

    def finish(self, ticket: Ticket) -> tuple[str, bool]:
        """Checks size and SHA-256 and renames into place; a mismatch discards everything."""
        size = self.part.stat().st_size
        if size != ticket.size:
            raise ModelhubError("INCOMPLETE", f"got {size} of {ticket.size} bytes; run again to resume")
        _, digest = file_digest(self.part)
        if ticket.sha256 is not None and digest != ticket.sha256:
            self.discard()
            raise ChecksumMismatchError(
                "CHECKSUM_MISMATCH",
                f"the downloaded file has SHA-256 {digest}, the server's is {ticket.sha256}",
                {"expected": ticket.sha256, "actual": digest},
            )
        self.part.replace(self.dest)
        self.meta.unlink(missing_ok=True)
        return digest, ticket.sha256 is not None


def _download_variables(
    name: str, version: int | None, alias: str | None, mode: str, resumes: str | None
) -> dict[str, Any]:
    request = {"name": name, "version": version, "alias": alias, "mode": mode, "resumes": resumes}
    return {"input": {k: v for k, v in request.items() if v is not None}}


def _upload_variables(
    name: str, project: str, size: int, sha256: str, filename: str, **optional: Any
) -> dict[str, Any]:
    fields = {"name": name, "projectName": project, "sizeBytes": size, "sha256": sha256, "filename": filename}
    return {"input": {**fields, **{k: v for k, v in optional.items() if v is not None}}}


def _range_headers(offset: int, etag: str | None) -> dict[str, str]:
    if not offset:
        return {}
    headers = {"Range": f"bytes={offset}-"}
    if etag:
        headers["If-Range"] = etag
    return headers


def _file_slices(path: Path, start: int, length: int, progress: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                return
            left -= len(block)
            progress(len(block))
            yield block


def _stats_variables(
    by: list[str], interval: str | None, filter: dict[str, Any] | None, after: str | None
) -> dict[str, Any]:
    return {"groupBy": [b.upper() for b in by], "interval": interval, "filter": filter, "after": after}


# --- the synchronous client ----------------------------------------------------------------------------


class ModelhubClient:
    """Talks to one modelhub server. `engineer` is sent as X-Engineer-ID (header mode), `token` as a bearer
    token (token mode); both default to MODELHUB_ENGINEER / MODELHUB_TOKEN, the URL to MODELHUB_URL."""

    def __init__(
        self,
        base_url: str | None = None,
        engineer: str | None = None,
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        self.http = httpx.Client(base_url=self.base_url, headers=_headers(engineer, token), timeout=timeout)
        # Ticket and presigned URLs carry their own authority: no bearer token goes to an object store.
        self.plain = httpx.Client(timeout=timeout, headers={"User-Agent": "modelhub-sdk/0.2"})

    def __enter__(self) -> ModelhubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.plain.close()

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return _graphql_data(resp)

    def register(self, name: str, project: str, bucket: str, key: str, **optional: Any) -> dict[str, Any]:
        """Registers an artifact already in the store (optional: version, description, tags, metadata,
        sha256)."""
        fields = {"name": name, "projectName": project, "bucket": bucket, "key": key, **optional}
        return _result(self.graphql(REGISTER, {"input": fields})["registerModel"])

    def push(
        self,
        path: Path,
        name: str,
        project: str,
        *,
        progress: Progress | None = None,
        **optional: Any,
    ) -> dict[str, Any]:
        """Uploads a file as a new version (optional: version, description, tags, metadata, contentType)
        and returns it. The file's SHA-256 is declared, so the server refuses other bytes."""
        size, sha256 = file_digest(path)
        variables = _upload_variables(name, project, size, sha256, path.name, **optional)
        ticket = _result(self.graphql(REQUEST_UPLOAD, variables)["requestUpload"])
        sent = 0

        def advance(n: int) -> None:
            nonlocal sent
            sent += n
            if progress:
                progress(sent, size)

        etags = []
        try:
            if ticket["url"]:
                headers = {h["name"]: h["value"] for h in ticket["headers"]} | {"Content-Length": str(size)}
                resp = self.plain.put(
                    ticket["url"], content=_file_slices(path, 0, size, advance), headers=headers
                )
                if resp.status_code >= 300:
                    raise _http_error(resp)
            for part in ticket["parts"]:
                start = (part["partNumber"] - 1) * ticket["partSizeBytes"]
                length = int(part["sizeBytes"])
                body = _file_slices(path, start, length, advance)
                resp = self.plain.put(part["url"], content=body, headers={"Content-Length": str(length)})
                if resp.status_code >= 300:
                    raise _http_error(resp)
                etags.append(resp.headers["etag"])
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        done = {"uploadId": ticket["uploadId"], "partEtags": etags or None}
        return _result(self.graphql(COMPLETE_UPLOAD, {"input": done})["completeUpload"])

    def models(self, **filter: Any) -> list[dict[str, Any]]:
        """Every model matching `filter` (a ModelFilter: names, namePrefix, projectNames, owners, tags...),
        following the pages."""
        rows: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.graphql(MODELS, {"first": 100, "after": after, "filter": filter or None})["models"]
            rows += page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return rows
            after = page["pageInfo"]["endCursor"]

    def info(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """One version (the latest by default; `name` may be a NAME@VERSION or NAME@ALIAS ref) with its
        model's totals; NotFoundError when there is none."""
        name, version, alias = _resolve(name, version, alias)
        data = self.graphql(INFO, {"name": name, "version": version, "alias": alias})
        return _info(data, name, version, alias)

    def stats(self, by: list[str], interval: str | None = None, **filter: Any) -> list[dict[str, Any]]:
        """downloadStats rows grouped `by` dimensions (MODEL, VERSION, PROJECT, ENGINEER, MODE, STATUS) per
        `interval` (HOUR, DAY, WEEK, MONTH), all pages; `filter` is a DownloadFilter (since, until...)."""
        rows: list[dict[str, Any]] = []
        after = None
        while True:
            variables = _stats_variables(by, interval, filter or None, after)
            page = self.graphql(STATS, variables)["downloadStats"]
            rows += page["rows"]
            if not page["pageInfo"]["hasNextPage"]:
                return rows
            after = page["pageInfo"]["endCursor"]

    def request_download(
        self,
        name: str,
        version: int | None = None,
        mode: str = "STREAM",
        alias: str | None = None,
        resumes: str | None = None,
    ) -> Ticket:
        variables = _download_variables(name, version, alias, mode, resumes)
        return _ticket(_result(self.graphql(REQUEST_DOWNLOAD, variables)["requestDownload"]))

    def download(
        self,
        name: str,
        dest: Path,
        version: int | None = None,
        *,
        alias: str | None = None,
        presigned: bool = False,
        progress: Progress | None = None,
    ) -> DownloadResult:
        """Downloads to `dest` through `<dest>.part`, resuming what is there; verified, then renamed.
        `name` may be a NAME@VERSION or NAME@ALIAS ref."""
        name, version, alias = _resolve(name, version, alias)
        started = time.perf_counter()
        try:
            return self._download(name, dest, version, alias, presigned, progress, started, retry=True)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc

    def _download(
        self,
        name: str,
        dest: Path,
        version: int | None,
        alias: str | None,
        presigned: bool,
        progress: Progress | None,
        started: float,
        retry: bool,
    ) -> DownloadResult:
        partial = _Partial(dest)
        have, meta = partial.resumable(name, version)
        mode = "PRESIGNED" if presigned else "STREAM"
        resumes = meta.get("download") if have and not presigned else None
        try:
            ticket = self.request_download(name, version, mode, alias, resumes)
        except InvalidInputError as exc:
            if exc.details.get("field") != "resumes":
                raise
            ticket = self.request_download(name, version, mode, alias)
        if have and (meta.get("version") != ticket.version or have > ticket.size):
            partial.discard()
            have = 0
        partial.record(name, ticket)
        written, offset = 0, have
        if have < ticket.size:
            headers = _range_headers(have, meta.get("etag") or ticket.etag)
            with self.plain.stream("GET", ticket.url, headers=headers) as resp:
                if resp.status_code not in (200, 206):
                    resp.read()
                    raise _http_error(resp)
                offset = have if resp.status_code == 206 else 0  # 200: If-Range said the object changed
                with partial.open_at(offset) as fh:
                    for chunk in resp.iter_raw(CHUNK):
                        fh.write(chunk)
                        written += len(chunk)
                        if progress:
                            progress(offset + written, ticket.size)
        try:
            digest, verified = partial.finish(ticket)
        except ChecksumMismatchError:
            if not retry:
                raise
            return self._download(name, dest, version, alias, presigned, progress, started, retry=False)
        seconds = time.perf_counter() - started
        return DownloadResult(dest, ticket.version, ticket.size, written, offset, digest, verified, seconds)

    list = models  # `client.list(projectNames=[...])`; last, so that `list[...]` above is the builtin


def _info(data: dict[str, Any], name: str, version: int | None, alias: str | None) -> dict[str, Any]:
    found = data.get("modelVersion")
    if found:
        return dict(found)
    if data.get("model") is None:
        raise NotFoundError("MODEL_NOT_FOUND", f"model {name!r} does not exist")
    what = f"version {version}" if version is not None else f"alias {alias!r}" if alias else "a version"
    raise NotFoundError("MODEL_VERSION_NOT_FOUND", f"model {name!r} has no {what}")


# --- the asynchronous client ---------------------------------------------------------------------------


class AsyncModelhubClient:
    """`ModelhubClient` for asyncio code (notebooks, services): the same methods, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        engineer: str | None = None,
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        headers = _headers(engineer, token)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)
        self.plain = httpx.AsyncClient(timeout=timeout, headers={"User-Agent": "modelhub-sdk/0.2"})

    async def __aenter__(self) -> AsyncModelhubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.plain.aclose()

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = await self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return _graphql_data(resp)

    async def register(
        self, name: str, project: str, bucket: str, key: str, **optional: Any
    ) -> dict[str, Any]:
        fields = {"name": name, "projectName": project, "bucket": bucket, "key": key, **optional}
        return _result((await self.graphql(REGISTER, {"input": fields}))["registerModel"])

    async def push(
        self, path: Path, name: str, project: str, *, progress: Progress | None = None, **optional: Any
    ) -> dict[str, Any]:
        size, sha256 = await asyncio.to_thread(file_digest, path)
        variables = _upload_variables(name, project, size, sha256, path.name, **optional)
        ticket = _result((await self.graphql(REQUEST_UPLOAD, variables))["requestUpload"])
        sent = 0

        def advance(n: int) -> None:
            nonlocal sent
            sent += n
            if progress:
                progress(sent, size)

        async def body(start: int, length: int) -> AsyncIterator[bytes]:
            for block in _file_slices(path, start, length, advance):
                yield block

        etags = []
        try:
            if ticket["url"]:
                headers = {h["name"]: h["value"] for h in ticket["headers"]} | {"Content-Length": str(size)}
                resp = await self.plain.put(ticket["url"], content=body(0, size), headers=headers)
                if resp.status_code >= 300:
                    raise _http_error(resp)
            for part in ticket["parts"]:
                start, length = (part["partNumber"] - 1) * ticket["partSizeBytes"], int(part["sizeBytes"])
                resp = await self.plain.put(
                    part["url"], content=body(start, length), headers={"Content-Length": str(length)}
                )
                if resp.status_code >= 300:
                    raise _http_error(resp)
                etags.append(resp.headers["etag"])
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        done = {"uploadId": ticket["uploadId"], "partEtags": etags or None}
        return _result((await self.graphql(COMPLETE_UPLOAD, {"input": done}))["completeUpload"])

    async def models(self, **filter: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = None
        while True:
            variables = {"first": 100, "after": after, "filter": filter or None}
            page = (await self.graphql(MODELS, variables))["models"]
            rows += page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return rows
            after = page["pageInfo"]["endCursor"]

    async def info(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        name, version, alias = _resolve(name, version, alias)
        data = await self.graphql(INFO, {"name": name, "version": version, "alias": alias})
        return _info(data, name, version, alias)

    async def stats(self, by: list[str], interval: str | None = None, **filter: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = None
        while True:
            page = (await self.graphql(STATS, _stats_variables(by, interval, filter or None, after)))[
                "downloadStats"
            ]
            rows += page["rows"]
            if not page["pageInfo"]["hasNextPage"]:
                return rows
            after = page["pageInfo"]["endCursor"]

    async def request_download(
        self,
        name: str,
        version: int | None = None,
        mode: str = "STREAM",
        alias: str | None = None,
        resumes: str | None = None,
    ) -> Ticket:
        variables = _download_variables(name, version, alias, mode, resumes)
        return _ticket(_result((await self.graphql(REQUEST_DOWNLOAD, variables))["requestDownload"]))

    async def download(
        self,
        name: str,
        dest: Path,
        version: int | None = None,
        *,
        alias: str | None = None,
        presigned: bool = False,
        progress: Progress | None = None,
    ) -> DownloadResult:
        name, version, alias = _resolve(name, version, alias)
        started = time.perf_counter()
        try:
            for retry in (True, False):
                try:
                    return await self._download(name, dest, version, alias, presigned, progress, started)
                except ChecksumMismatchError:
                    if not retry:
                        raise
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        raise AssertionError("unreachable")

    async def _download(
        self,
        name: str,
        dest: Path,
        version: int | None,
        alias: str | None,
        presigned: bool,
        progress: Progress | None,
        started: float,
    ) -> DownloadResult:
        partial = _Partial(dest)
        have, meta = partial.resumable(name, version)
        mode = "PRESIGNED" if presigned else "STREAM"
        resumes = meta.get("download") if have and not presigned else None
        try:
            ticket = await self.request_download(name, version, mode, alias, resumes)
        except InvalidInputError as exc:
            if exc.details.get("field") != "resumes":
                raise
            ticket = await self.request_download(name, version, mode, alias)
        if have and (meta.get("version") != ticket.version or have > ticket.size):
            partial.discard()
            have = 0
        partial.record(name, ticket)
        written, offset = 0, have
        if have < ticket.size:
            headers = _range_headers(have, meta.get("etag") or ticket.etag)
            async with self.plain.stream("GET", ticket.url, headers=headers) as resp:
                if resp.status_code not in (200, 206):
                    await resp.aread()
                    raise _http_error(resp)
                offset = have if resp.status_code == 206 else 0
                with partial.open_at(offset) as fh:
                    async for chunk in resp.aiter_raw(CHUNK):
                        fh.write(chunk)
                        written += len(chunk)
                        if progress:
                            progress(offset + written, ticket.size)
        digest, verified = await asyncio.to_thread(partial.finish, ticket)
        seconds = time.perf_counter() - started
        return DownloadResult(dest, ticket.version, ticket.size, written, offset, digest, verified, seconds)
