"""The modelhub SDK over HTTP, synchronous (`ModelhubClient`) and asynchronous (`AsyncModelhubClient`).

It imports no server module: httpx only. The server and identity come from the arguments or from
`MODELHUB_URL`, `MODELHUB_TOKEN` (bearer token) and `MODELHUB_ENGINEER` (X-Engineer-ID, header mode).
Every error the server reports is raised as a typed `ModelhubError` subclass carrying its `code`.

Downloads go to `<dest>.part` (with `<dest>.part.json` saying which version, ETag and download it came
from), resume with `Range` + `If-Range` and `requestDownload(resumes:)` so that the server counts one
download, are checked for size and SHA-256, and are renamed into place atomically. A checksum mismatch
deletes the partial file and starts over once; a second one raises `ChecksumMismatchError`.

Results are typed (`graphql_api.client_types`, re-exported here): `ModelVersion`, `Model`, `DownloadTicket`,
`DownloadResult`, `StatsRow`, `Page`, ...: frozen dataclasses with snake_case fields.

Each operation is written once, as a generator ("flow") that yields the I/O it needs (`Call`, `Put`,
`Fetch`, `Blocking`) and gets the answers back; `ModelhubClient` and `AsyncModelhubClient` only run those
steps, synchronously or awaited.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx

from .client_types import (
    Alias,
    DownloadResult,
    DownloadTicket,
    LatestVersion,
    Model,
    ModelTotals,
    ModelVersion,
    Page,
    RegisteredOperation,
    StatsRow,
)

__all__ = [
    "Alias",
    "AlreadyExistsError",
    "ArchivedError",
    "ArtifactChangedError",
    "AsyncModelhubClient",
    "AuthError",
    "ChecksumMismatchError",
    "DownloadResult",
    "DownloadTicket",
    "InvalidInputError",
    "LatestVersion",
    "Model",
    "ModelTotals",
    "ModelVersion",
    "ModelhubClient",
    "ModelhubError",
    "NotFoundError",
    "Page",
    "RateLimitedError",
    "RegisteredOperation",
    "StatsRow",
    "UnavailableError",
    "error_for",
    "file_digest",
    "parse_ref",
]

CHUNK = 1024 * 1024
DEFAULT_URL = "http://127.0.0.1:8000"
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
T = TypeVar("T")


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


class ObjectDeletedError(ArchivedError):
    """The version was pruned: its artifact is deleted (a tombstone keeps its history and figures)."""


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
    "OBJECT_DELETED": ObjectDeletedError,
    "CHECKSUM_MISMATCH": ChecksumMismatchError,
    "ARTIFACT_CHANGED": ArtifactChangedError,
    "UNAUTHENTICATED": AuthError,
    "FORBIDDEN": AuthError,
    "RATE_LIMITED": RateLimitedError,
    **dict.fromkeys(
        [
            "DATABASE_UNAVAILABLE",
            "DATABASE_TIMEOUT",
            "STORAGE_UNAVAILABLE",
            "UNREACHABLE",
            "CHECKSUM_PENDING",  # the artifact is still being verified: try again after Retry-After
            "TOO_MANY_CONNECTIONS",
        ],
        UnavailableError,
    ),
}


def error_for(code: str, message: str, details: dict[str, Any] | None = None) -> ModelhubError:
    """The `ModelhubError` subclass for a server's error `code` (`ModelhubError` for an unknown one)."""
    return ERRORS.get(code, ModelhubError)(code, message, details)


def unreachable(base_url: str, exc: httpx.HTTPError) -> UnavailableError:
    """The error raised when the server at `base_url` cannot be reached (code UNREACHABLE)."""
    return UnavailableError("UNREACHABLE", f"cannot reach {base_url} ({type(exc).__name__})")


# --- GraphQL documents ---------------------------------------------------------------------------------

# What `ModelVersion.from_graphql` reads.
VERSION_FIELDS = """id name version projectName owner description tags metadata sizeBytes etag
      contentType sha256 checksumStatus checksumError storageUri createdAt archived aliases downloadCount
      lastDownloadedAt"""
ERROR_FIELDS = "... on UserError { __typename code message } ... on InvalidInput { field }"


def _mutation_document(operation: str, success: str) -> str:
    """The mutation `operation` (field `operation` in camelCase, input `<operation>Input`) with its result
    union's `success` member and the shared error types."""
    field = operation[0].lower() + operation[1:]
    return f"""
mutation {operation}($input: {operation}Input!) {{
  {field}(input: $input) {{
    __typename
    {success}
    {ERROR_FIELDS}
  }}
}}"""


REPORT_VERIFICATION = _mutation_document(
    "ReportDownloadVerification", "... on DownloadEvent { id sha256Matches }"
)
REQUEST_DOWNLOAD = _mutation_document(
    "RequestDownload",
    "... on DownloadTicket { url mode expiresAt "
    "download { id version sizeBytes modelVersion { etag sha256 checksumStatus } } }",
)
REGISTER = _mutation_document("RegisterModel", f"... on ModelVersion {{ {VERSION_FIELDS} }}")
REQUEST_UPLOAD = _mutation_document(
    "RequestUpload",
    "... on UploadTicket { uploadId url headers { name value } parts { partNumber url sizeBytes } "
    "partSizeBytes expiresAt }",
)
COMPLETE_UPLOAD = _mutation_document("CompleteUpload", f"... on ModelVersion {{ {VERSION_FIELDS} }}")
PROJECT_FIELDS = "... on Project { name visibility grants { project principal role } }"
SET_PROJECT_VISIBILITY = _mutation_document("SetProjectVisibility", PROJECT_FIELDS)
GRANT_PROJECT_ROLE = _mutation_document("GrantProjectRole", PROJECT_FIELDS)
REVOKE_PROJECT_ROLE = _mutation_document("RevokeProjectRole", PROJECT_FIELDS)
CREATE_TOKEN = _mutation_document(
    "CreateToken", "... on CreatedToken { token apiToken { name principal role grants { project role } } }"
)
GRANTS = "query Grants($project: String) { grants(project: $project) { project principal role } }"
REGISTER_OPERATIONS = _mutation_document(
    "RegisterOperations",
    "... on RegisteredOperations { operations { sha256Hash name created } }",
)

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
    {VERSION_FIELDS}
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
    "REGISTER_OPERATIONS": REGISTER_OPERATIONS,
    "REQUEST_DOWNLOAD": REQUEST_DOWNLOAD,
    "REGISTER": REGISTER,
    "REQUEST_UPLOAD": REQUEST_UPLOAD,
    "COMPLETE_UPLOAD": COMPLETE_UPLOAD,
    "MODELS": MODELS,
    "INFO": INFO,
    "STATS": STATS,
}


# --- shared, I/O-free pieces ---------------------------------------------------------------------------


# --- the steps a flow yields, and what its driver answers -----------------------------------------------


@dataclass(frozen=True)
class Call:
    """A GraphQL operation → its `data` (top-level errors raised as typed exceptions)."""

    query: str
    variables: dict[str, Any]


@dataclass(frozen=True)
class Put:
    """PUT `length` bytes of `path` from `start` to a presigned or app URL → the response's ETag."""

    url: str
    path: Path
    start: int
    length: int
    headers: dict[str, str]
    sent: Callable[[int], None]


@dataclass(frozen=True)
class Fetch:
    """GET `url` (no credentials: the URL carries its own) → its status, the body handed to `sink`."""

    url: str
    headers: dict[str, str]
    sink: _Sink


@dataclass(frozen=True)
class Blocking:
    """Local work that may take a while (hashing a file) → its result; run off the event loop when async."""

    work: Callable[[], Any]


Step = Call | Put | Fetch | Blocking
Flow = Generator[Step, Any, T]


# --- shared, I/O-free pieces ---------------------------------------------------------------------------


SDK_VERSION = "0.2"
USER_AGENT = f"modelhub-sdk/{SDK_VERSION}"
# The environment variables CI services set: any of them makes the SDK declare its downloads CI.
CI_VARIABLES = (
    "CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD", "CIRCLECI", "TRAVIS",
    "BITBUCKET_BUILD_NUMBER", "TEAMCITY_VERSION", "DRONE", "CODEBUILD_BUILD_ID", "BUILD_ID",
    "MODELHUB_CI",  # what `modelhub download --ci REF` sets
)  # fmt: skip


def declared_kind(environ: Mapping[str, str] | None = None, terminal: bool | None = None) -> str | None:
    """What the SDK tells the server it is (X-Modelhub-Client-Kind): CI when a CI variable is set (and not
    "false" or "0"), HUMAN on a terminal, else nothing (the server then decides by the user agent)."""
    env = os.environ if environ is None else environ
    if any(env.get(name, "").strip().lower() not in ("", "0", "false") for name in CI_VARIABLES):
        return "CI"
    if terminal is None:
        terminal = sys.stdin.isatty() and sys.stdout.isatty()
    return "HUMAN" if terminal else None


def _headers(engineer: str | None, token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    kind = declared_kind()
    if kind:
        headers["X-Modelhub-Client-Kind"] = kind
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


def _hash_file(path: Path, length: int | None = None) -> Any:
    """A running SHA-256 of the first `length` bytes of a file (all of it by default)."""
    digest = hashlib.sha256()
    left = path.stat().st_size if length is None else length
    with path.open("rb") as fh:
        while left > 0 and (block := fh.read(min(CHUNK, left))):
            digest.update(block)
            left -= len(block)
    return digest


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks."""
    return path.stat().st_size, _hash_file(path).hexdigest()


def _file_slices(path: Path, start: int, length: int, sent: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                return
            left -= len(block)
            sent(len(block))
            yield block


class _Partial:
    """The `.part` file of a download and what it came from (`.part.json`)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.meta = dest.with_name(dest.name + ".part.json")

    def resumable(self, name: str, version: int | None) -> tuple[int, dict[str, Any]]:
        """How many bytes of the same model (and version, when known) are already here, and their record;
        a part file without a record of the same model is not trusted and is dropped."""
        if not self.part.exists():
            return 0, {}
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("name") != name or (version is not None and meta.get("version") != version):
            self.discard()
            return 0, {}
        return self.part.stat().st_size, meta

    def record(self, name: str, ticket: DownloadTicket) -> None:
        meta = {"name": name, "version": ticket.version, "etag": ticket.etag, "download": ticket.download_id}
        self.meta.write_text(json.dumps(meta))

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


@dataclass
class _Sink:
    """Writes a download's body after the `have` bytes already in the part file (or from byte 0 when the
    server sent the whole object), hashing as it writes: the file is never read back."""

    partial: _Partial
    have: int
    size: int
    digest: Any  # the running SHA-256 of the first `have` bytes
    progress: Progress | None
    offset: int = 0
    written: int = 0
    fh: BinaryIO | None = field(default=None, repr=False)

    def start(self, status: int) -> None:
        self.offset = self.have if status == 206 else 0  # 200: If-Range found the object changed
        if self.offset == 0:
            self.digest = hashlib.sha256()
        self.fh = self.partial.part.open("r+b" if self.offset else "wb")
        self.fh.seek(self.offset)
        self.fh.truncate()

    def write(self, chunk: bytes) -> None:
        assert self.fh is not None
        self.fh.write(chunk)
        self.digest.update(chunk)
        self.written += len(chunk)
        if self.progress:
            self.progress(self.offset + self.written, self.size)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


# --- flows: each operation once, as the steps it takes ------------------------------------------------


def _page(
    query: str, variables: dict[str, Any], field_name: str, rows: str, parse: Callable[[Any], T]
) -> Flow[Page[T]]:
    """One page of a paged query, each row parsed."""
    page = (yield Call(query, variables))[field_name]
    info = page["pageInfo"]
    return Page(tuple(parse(row) for row in page[rows]), bool(info["hasNextPage"]), info.get("endCursor"))


def _pages(
    query: str, variables: dict[str, Any], field_name: str, rows: str, parse: Callable[[Any], T]
) -> Flow[list[T]]:
    """Every row of a paged query, following `pageInfo.endCursor`."""
    found: list[T] = []
    after = None
    while True:
        page = yield from _page(query, {**variables, "after": after}, field_name, rows, parse)
        found += page.items
        if not page.has_next_page:
            return found
        after = page.end_cursor


def _mutation(query: str, variables: dict[str, Any], field_name: str) -> Flow[dict[str, Any]]:
    return _result((yield Call(query, variables))[field_name])


def _token_input(
    name: str, principal: str, role: str | None, grants: dict[str, str] | None, expires_in_days: int | None
) -> dict[str, Any]:
    """createToken's input: `role` the global role (None: none), `grants` project -> role."""
    return {
        "name": name,
        "principal": principal,
        "role": role,
        "grants": [{"project": p, "role": r} for p, r in (grants or {}).items()],
        "expiresInDays": expires_in_days,
    }


def _grants(project: str | None) -> Flow[list[dict[str, Any]]]:
    found: list[dict[str, Any]] = (yield Call(GRANTS, {"project": project}))["grants"]
    return found


def _register(name: str, project: str, bucket: str, key: str, optional: dict[str, Any]) -> Flow[ModelVersion]:
    fields = {"name": name, "projectName": project, "bucket": bucket, "key": key, **optional}
    return ModelVersion.from_graphql((yield from _mutation(REGISTER, {"input": fields}, "registerModel")))


def _push(
    path: Path, name: str, project: str, progress: Progress | None, optional: dict[str, Any]
) -> Flow[ModelVersion]:
    size, sha256 = yield Blocking(lambda: file_digest(path))
    fields = {
        "name": name,
        "projectName": project,
        "sizeBytes": size,
        "sha256": sha256,
        "filename": path.name,
    }
    fields |= {k: v for k, v in optional.items() if v is not None}
    ticket = yield from _mutation(REQUEST_UPLOAD, {"input": fields}, "requestUpload")
    done = 0

    def sent(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, size)

    etags = []
    if ticket["url"]:
        headers = {h["name"]: h["value"] for h in ticket["headers"]} | {"Content-Length": str(size)}
        yield Put(ticket["url"], path, 0, size, headers, sent)
    for part in ticket["parts"]:
        start, length = (part["partNumber"] - 1) * ticket["partSizeBytes"], int(part["sizeBytes"])
        etags.append((yield Put(part["url"], path, start, length, {"Content-Length": str(length)}, sent)))
    completion = {"uploadId": ticket["uploadId"], "partEtags": etags or None}
    made = yield from _mutation(COMPLETE_UPLOAD, {"input": completion}, "completeUpload")
    return ModelVersion.from_graphql(made)


def _info(name: str, version: int | None, alias: str | None) -> Flow[ModelVersion]:
    name, version, alias = _resolve(name, version, alias)
    data = yield Call(INFO, {"name": name, "version": version, "alias": alias})
    if data.get("modelVersion"):
        return ModelVersion.from_graphql(data["modelVersion"])
    if data.get("model") is None:
        raise NotFoundError("MODEL_NOT_FOUND", f"model {name!r} does not exist")
    what = f"version {version}" if version is not None else f"alias {alias!r}" if alias else "a version"
    raise NotFoundError("MODEL_VERSION_NOT_FOUND", f"model {name!r} has no {what}")


def _models(filter: dict[str, Any]) -> Flow[list[Model]]:
    variables = {"first": 100, "filter": filter or None}
    return (yield from _pages(MODELS, variables, "models", "nodes", Model.from_graphql))


def _models_page(first: int, after: str | None, filter: dict[str, Any]) -> Flow[Page[Model]]:
    variables = {"first": first, "after": after, "filter": filter or None}
    return (yield from _page(MODELS, variables, "models", "nodes", Model.from_graphql))


def _stats(by: Sequence[str], interval: str | None, filter: dict[str, Any]) -> Flow[list[StatsRow]]:
    variables = {"groupBy": [b.upper() for b in by], "interval": interval, "filter": filter or None}
    return (yield from _pages(STATS, variables, "downloadStats", "rows", StatsRow.from_graphql))


def _register_operations(bodies: Sequence[str]) -> Flow[list[RegisteredOperation]]:
    variables = {"input": {"operations": list(bodies)}}
    found = yield from _mutation(REGISTER_OPERATIONS, variables, "registerOperations")
    return [RegisteredOperation.from_graphql(op) for op in found["operations"]]


def _request_download(
    name: str, version: int | None, mode: str, alias: str | None, resumes: str | None
) -> Flow[DownloadTicket]:
    request = {"name": name, "version": version, "alias": alias, "mode": mode, "resumes": resumes}
    variables = {"input": {k: v for k, v in request.items() if v is not None}}
    return DownloadTicket.from_graphql((yield from _mutation(REQUEST_DOWNLOAD, variables, "requestDownload")))


def _download(
    name: str, dest: Path, version: int | None, alias: str | None, presigned: bool, progress: Progress | None
) -> Flow[DownloadResult]:
    """Downloads, verifies and renames into place; a file failing its SHA-256 is fetched again once."""
    name, version, alias = _resolve(name, version, alias)
    started = time.perf_counter()
    for attempt in (1, 2):
        partial = _Partial(dest)
        have, meta = partial.resumable(name, version)
        mode = "PRESIGNED" if presigned else "STREAM"
        resumes = meta.get("download") if have and not presigned else None
        try:
            ticket = yield from _request_download(name, version, mode, alias, resumes)
        except InvalidInputError as exc:
            if exc.details.get("field") != "resumes":
                raise
            ticket = yield from _request_download(name, version, mode, alias, None)
        if have and (meta.get("version") != ticket.version or have > ticket.size):
            partial.discard()
            have = 0
        partial.record(name, ticket)
        seed = (
            (yield Blocking(functools.partial(_hash_file, partial.part, have))) if have else hashlib.sha256()
        )
        sink = _Sink(partial, have, ticket.size, seed, progress, offset=have)
        if have < ticket.size:
            headers = {"Range": f"bytes={have}-", "If-Range": meta.get("etag") or ticket.etag} if have else {}
            yield Fetch(ticket.url, headers, sink)
        received = sink.offset + sink.written
        if received != ticket.size:
            raise ModelhubError("INCOMPLETE", f"got {received} of {ticket.size} bytes; run again to resume")
        digest = sink.digest.hexdigest()
        if ticket.sha256 is not None:
            yield from _report_verification(ticket.download_id, digest == ticket.sha256)
        if ticket.sha256 is None or digest == ticket.sha256:
            partial.part.replace(dest)
            partial.meta.unlink(missing_ok=True)
            seconds = time.perf_counter() - started
            verified = ticket.sha256 is not None
            return DownloadResult(
                dest, ticket.version, ticket.size, sink.written, sink.offset, digest, verified, seconds
            )
        partial.discard()  # wrong bytes: never resumed from; the next attempt starts at byte 0
        if attempt == 2:
            raise ChecksumMismatchError(
                "CHECKSUM_MISMATCH",
                f"the downloaded file has SHA-256 {digest}, the server's is {ticket.sha256}",
                {"expected": ticket.sha256, "actual": digest},
            )
    raise AssertionError("unreachable")


def _report_verification(download_id: str, matches: bool) -> Flow[None]:
    """Tells the server the verdict of the SHA-256 check (its `verified` / `mismatched` figures). A report
    that fails (a server from before reports, a lost connection) does not fail the download."""
    with contextlib.suppress(ModelhubError, httpx.HTTPError):
        yield from _mutation(
            REPORT_VERIFICATION, {"input": {"download": download_id, "sha256Matches": matches}},
            "reportDownloadVerification",
        )  # fmt: skip


def _failure(base_url: str, exc: Exception) -> Exception:
    """What a failed step throws into its flow: an unreachable server as `UnavailableError`."""
    if isinstance(exc, httpx.TransportError):
        failure = unreachable(base_url, exc)
        failure.__cause__ = exc
        return failure
    return exc


# --- drivers -------------------------------------------------------------------------------------------


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
        self.plain = httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT})

    def __enter__(self) -> ModelhubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the client's connections (the `with` block does it)."""
        self.http.close()
        self.plain.close()

    def _run(self, flow: Flow[T]) -> T:
        """Runs a flow's steps; a step's failure is thrown into the flow, which may handle it."""
        answer: Any = None
        failure: Exception | None = None
        while True:
            try:
                step = flow.send(answer) if failure is None else flow.throw(failure)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                answer, failure = self._step(step), None
            except Exception as exc:
                answer, failure = None, _failure(self.base_url, exc)

    def _step(self, step: Step) -> Any:
        if isinstance(step, Call):
            return self.graphql(step.query, step.variables)
        if isinstance(step, Blocking):
            return step.work()
        if isinstance(step, Put):
            body = _file_slices(step.path, step.start, step.length, step.sent)
            resp = self.plain.put(step.url, content=body, headers=step.headers)
            if resp.status_code >= 300:
                raise _http_error(resp)
            return resp.headers.get("etag")
        with self.plain.stream("GET", step.url, headers=step.headers) as resp:
            if resp.status_code not in (200, 206):
                resp.read()
                raise _http_error(resp)
            step.sink.start(resp.status_code)
            try:
                for chunk in resp.iter_raw():
                    step.sink.write(chunk)
            finally:
                step.sink.close()
        return resp.status_code

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Runs any GraphQL operation and returns its `data` (untyped); a top-level error is raised as the
        `ModelhubError` subclass of its code."""
        try:
            resp = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return _graphql_data(resp)

    def register(self, name: str, project: str, bucket: str, key: str, **optional: Any) -> ModelVersion:
        """Registers an artifact already in the store (optional: version, description, tags, metadata,
        sha256) and returns the new version."""
        return self._run(_register(name, project, bucket, key, optional))

    def push(
        self, path: Path, name: str, project: str, *, progress: Progress | None = None, **optional: Any
    ) -> ModelVersion:
        """Uploads a file as a new version (optional: version, description, tags, metadata, contentType)
        and returns it. The file's SHA-256 is declared, so the server refuses other bytes."""
        return self._run(_push(path, name, project, progress, optional))

    def models(self, **filter: Any) -> builtins.list[Model]:
        """Every model matching `filter` (a ModelFilter: names, namePrefix, projectNames, owners, tags...),
        following the pages."""
        return self._run(_models(filter))

    def models_page(self, first: int = 100, after: str | None = None, **filter: Any) -> Page[Model]:
        """One page of `first` models matching `filter`, after the cursor `after` (a previous page's
        `end_cursor`)."""
        return self._run(_models_page(first, after, filter))

    def info(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """One version (the latest by default; `name` may be a NAME@VERSION or NAME@ALIAS ref) with its
        model's totals; NotFoundError when there is none."""
        return self._run(_info(name, version, alias))

    def register_operations(self, bodies: Sequence[str]) -> builtins.list[RegisteredOperation]:
        """Registers operation texts for persisted-operation mode (needs an ADMIN token)."""
        return self._run(_register_operations(bodies))

    def create_token(
        self,
        name: str,
        principal: str,
        role: str | None = "READER",
        grants: dict[str, str] | None = None,
        expires_in_days: int | None = None,
    ) -> dict[str, Any]:
        """Creates a token (ADMIN): {token, apiToken}; the token is shown this once. `role` is the global
        role (None: none), `grants` maps project -> READER, ENGINEER or MAINTAINER."""
        variables = {"input": _token_input(name, principal, role, grants, expires_in_days)}
        return self._run(_mutation(CREATE_TOKEN, variables, "createToken"))

    def set_project_visibility(self, project: str, visibility: str) -> dict[str, Any]:
        """Makes a project INTERNAL or PRIVATE (its MAINTAINERs or an ADMIN)."""
        variables = {"input": {"project": project, "visibility": visibility}}
        return self._run(_mutation(SET_PROJECT_VISIBILITY, variables, "setProjectVisibility"))

    def grant_project_role(self, project: str, principal: str, role: str) -> dict[str, Any]:
        """Gives `principal` READER, ENGINEER or MAINTAINER in `project` (its MAINTAINERs or an ADMIN)."""
        variables = {"input": {"project": project, "principal": principal, "role": role}}
        return self._run(_mutation(GRANT_PROJECT_ROLE, variables, "grantProjectRole"))

    def revoke_project_role(self, project: str, principal: str) -> dict[str, Any]:
        """Takes `principal`'s project-side role in `project` away."""
        variables = {"input": {"project": project, "principal": principal}}
        return self._run(_mutation(REVOKE_PROJECT_ROLE, variables, "revokeProjectRole"))

    def grants(self, project: str | None = None) -> builtins.list[dict[str, Any]]:
        """The caller's own project roles, or (MAINTAINERs, ADMINs) a project's project-side grants."""
        return self._run(_grants(project))

    def stats(self, by: Sequence[str], interval: str | None = None, **filter: Any) -> builtins.list[StatsRow]:
        """downloadStats rows grouped `by` dimensions (MODEL, VERSION, PROJECT, ENGINEER, MODE, STATUS) per
        `interval` (HOUR, DAY, WEEK, MONTH), all pages; `filter` is a DownloadFilter (since, until...)."""
        return self._run(_stats(by, interval, filter))

    def request_download(
        self,
        name: str,
        version: int | None = None,
        mode: str = "STREAM",
        alias: str | None = None,
        resumes: str | None = None,
    ) -> DownloadTicket:
        """Asks for a download of a version (the latest by default) by `mode` STREAM or PRESIGNED and
        returns its ticket, without fetching it; `resumes` names an earlier download this one continues."""
        return self._run(_request_download(name, version, mode, alias, resumes))

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
        return self._run(_download(name, dest, version, alias, presigned, progress))

    # `client.list(projectNames=[...])`; so `list` in this class is this method, and the annotations say
    # `builtins.list` (documentation tools evaluate them in the class's namespace).
    list = models


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
        self.plain = httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT})

    async def __aenter__(self) -> AsyncModelhubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the client's connections (the `async with` block does it)."""
        await self.http.aclose()
        await self.plain.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        """`ModelhubClient._run`, each step awaited."""
        answer: Any = None
        failure: Exception | None = None
        while True:
            try:
                step = flow.send(answer) if failure is None else flow.throw(failure)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                answer, failure = await self._step(step), None
            except Exception as exc:
                answer, failure = None, _failure(self.base_url, exc)

    async def _step(self, step: Step) -> Any:
        if isinstance(step, Call):
            return await self.graphql(step.query, step.variables)
        if isinstance(step, Blocking):
            return await asyncio.to_thread(step.work)
        if isinstance(step, Put):

            async def body() -> AsyncIterator[bytes]:
                for block in _file_slices(step.path, step.start, step.length, step.sent):
                    yield block

            resp = await self.plain.put(step.url, content=body(), headers=step.headers)
            if resp.status_code >= 300:
                raise _http_error(resp)
            return resp.headers.get("etag")
        async with self.plain.stream("GET", step.url, headers=step.headers) as resp:
            if resp.status_code not in (200, 206):
                await resp.aread()
                raise _http_error(resp)
            step.sink.start(resp.status_code)
            try:
                async for chunk in resp.aiter_raw():
                    step.sink.write(chunk)
            finally:
                step.sink.close()
        return resp.status_code

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """`ModelhubClient.graphql`, awaited."""
        try:
            resp = await self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return _graphql_data(resp)

    async def register(self, name: str, project: str, bucket: str, key: str, **optional: Any) -> ModelVersion:
        """`ModelhubClient.register`, awaited."""
        return await self._run(_register(name, project, bucket, key, optional))

    async def push(
        self, path: Path, name: str, project: str, *, progress: Progress | None = None, **optional: Any
    ) -> ModelVersion:
        """`ModelhubClient.push`, awaited (the file is hashed off the event loop)."""
        return await self._run(_push(path, name, project, progress, optional))

    async def models(self, **filter: Any) -> builtins.list[Model]:
        """`ModelhubClient.models`, awaited."""
        return await self._run(_models(filter))

    async def models_page(self, first: int = 100, after: str | None = None, **filter: Any) -> Page[Model]:
        """`ModelhubClient.models_page`, awaited."""
        return await self._run(_models_page(first, after, filter))

    async def info(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """`ModelhubClient.info`, awaited."""
        return await self._run(_info(name, version, alias))

    async def register_operations(self, bodies: Sequence[str]) -> builtins.list[RegisteredOperation]:
        """`ModelhubClient.register_operations`, awaited."""
        return await self._run(_register_operations(bodies))

    async def stats(
        self, by: Sequence[str], interval: str | None = None, **filter: Any
    ) -> builtins.list[StatsRow]:
        """`ModelhubClient.stats`, awaited."""
        return await self._run(_stats(by, interval, filter))

    async def create_token(
        self,
        name: str,
        principal: str,
        role: str | None = "READER",
        grants: dict[str, str] | None = None,
        expires_in_days: int | None = None,
    ) -> dict[str, Any]:
        """`ModelhubClient.create_token`, awaited."""
        variables = {"input": _token_input(name, principal, role, grants, expires_in_days)}
        return await self._run(_mutation(CREATE_TOKEN, variables, "createToken"))

    async def set_project_visibility(self, project: str, visibility: str) -> dict[str, Any]:
        """`ModelhubClient.set_project_visibility`, awaited."""
        variables = {"input": {"project": project, "visibility": visibility}}
        return await self._run(_mutation(SET_PROJECT_VISIBILITY, variables, "setProjectVisibility"))

    async def grant_project_role(self, project: str, principal: str, role: str) -> dict[str, Any]:
        """`ModelhubClient.grant_project_role`, awaited."""
        variables = {"input": {"project": project, "principal": principal, "role": role}}
        return await self._run(_mutation(GRANT_PROJECT_ROLE, variables, "grantProjectRole"))

    async def revoke_project_role(self, project: str, principal: str) -> dict[str, Any]:
        """`ModelhubClient.revoke_project_role`, awaited."""
        variables = {"input": {"project": project, "principal": principal}}
        return await self._run(_mutation(REVOKE_PROJECT_ROLE, variables, "revokeProjectRole"))

    async def grants(self, project: str | None = None) -> builtins.list[dict[str, Any]]:
        """`ModelhubClient.grants`, awaited."""
        return await self._run(_grants(project))

    async def request_download(
        self,
        name: str,
        version: int | None = None,
        mode: str = "STREAM",
        alias: str | None = None,
        resumes: str | None = None,
    ) -> DownloadTicket:
        """`ModelhubClient.request_download`, awaited."""
        return await self._run(_request_download(name, version, mode, alias, resumes))

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
        """`ModelhubClient.download`, awaited."""
        return await self._run(_download(name, dest, version, alias, presigned, progress))

    list = models
