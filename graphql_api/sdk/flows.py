"""Each SDK operation written once, as a generator ("flow") that yields the I/O steps it needs and gets their
answers back; `ModelhubClient` and `AsyncModelhubClient` run the same flows, synchronously or awaited."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .. import codes
from .documents import (
    COMPLETE_UPLOAD,
    CREATE_TOKEN,
    GRANT_PROJECT_ROLE,
    GRANTS,
    INFO,
    MODELS,
    REGISTER,
    REGISTER_OPERATIONS,
    REPORT_VERIFICATION,
    REQUEST_DOWNLOAD,
    REQUEST_UPLOAD,
    REVOKE_PROJECT_ROLE,
    SET_PROJECT_VISIBILITY,
    STATS,
)
from .errors import ChecksumMismatchError, InvalidInputError, ModelhubError, NotFoundError
from .files import Partial, Progress, Sink, file_digest, hash_file
from .transport import Blocking, Call, Fetch, Flow, Put, mutation_result
from .types import DownloadResult, DownloadTicket, Model, ModelVersion, Page, RegisteredOperation, StatsRow

T = TypeVar("T")


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`NAME`, `NAME@3` or `NAME@prod` → (name, version, alias)."""
    name, _, at = ref.partition("@")
    if not at:
        return name, None, None
    if at.isdigit():
        return name, int(at), None
    return name, None, at


def resolve(ref: str, version: int | None, alias: str | None) -> tuple[str, int | None, str | None]:
    """A name, or a `NAME@VERSION` / `NAME@ALIAS` ref when no version or alias is given separately
    (names never contain @)."""
    if version is None and alias is None:
        return parse_ref(ref)
    return ref, version, alias


def one_page(
    query: str, variables: dict[str, Any], field_name: str, rows: str, parse: Callable[[Any], T]
) -> Flow[Page[T]]:
    """One page of a paged query, each row parsed."""
    page = (yield Call(query, variables))[field_name]
    info = page["pageInfo"]
    return Page(tuple(parse(row) for row in page[rows]), bool(info["hasNextPage"]), info.get("endCursor"))


def all_pages(
    query: str, variables: dict[str, Any], field_name: str, rows: str, parse: Callable[[Any], T]
) -> Flow[list[T]]:
    """Every row of a paged query, following `pageInfo.endCursor`."""
    found: list[T] = []
    after = None
    while True:
        page = yield from one_page(query, {**variables, "after": after}, field_name, rows, parse)
        found += page.items
        if not page.has_next_page:
            return found
        after = page.end_cursor


def mutation(query: str, variables: dict[str, Any], field_name: str) -> Flow[dict[str, Any]]:
    return mutation_result((yield Call(query, variables))[field_name])


def create_token(
    name: str, principal: str, role: str | None, grants: dict[str, str] | None, expires_in_days: int | None
) -> Flow[dict[str, Any]]:
    """createToken: `role` the global role (None: none), `grants` project -> role."""
    token = {
        "name": name,
        "principal": principal,
        "role": role,
        "grants": [{"project": p, "role": r} for p, r in (grants or {}).items()],
        "expiresInDays": expires_in_days,
    }
    return mutation(CREATE_TOKEN, {"input": token}, "createToken")


def set_project_visibility(project: str, visibility: str) -> Flow[dict[str, Any]]:
    variables = {"input": {"project": project, "visibility": visibility}}
    return mutation(SET_PROJECT_VISIBILITY, variables, "setProjectVisibility")


def grant_project_role(project: str, principal: str, role: str) -> Flow[dict[str, Any]]:
    variables = {"input": {"project": project, "principal": principal, "role": role}}
    return mutation(GRANT_PROJECT_ROLE, variables, "grantProjectRole")


def revoke_project_role(project: str, principal: str) -> Flow[dict[str, Any]]:
    variables = {"input": {"project": project, "principal": principal}}
    return mutation(REVOKE_PROJECT_ROLE, variables, "revokeProjectRole")


def grants(project: str | None) -> Flow[list[dict[str, Any]]]:
    found: list[dict[str, Any]] = (yield Call(GRANTS, {"project": project}))["grants"]
    return found


def register(name: str, project: str, bucket: str, key: str, optional: dict[str, Any]) -> Flow[ModelVersion]:
    fields = {"name": name, "projectName": project, "bucket": bucket, "key": key, **optional}
    return ModelVersion.from_graphql((yield from mutation(REGISTER, {"input": fields}, "registerModel")))


def push(
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
    ticket = yield from mutation(REQUEST_UPLOAD, {"input": fields}, "requestUpload")
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
    made = yield from mutation(COMPLETE_UPLOAD, {"input": completion}, "completeUpload")
    return ModelVersion.from_graphql(made)


def info(name: str, version: int | None, alias: str | None) -> Flow[ModelVersion]:
    name, version, alias = resolve(name, version, alias)
    data = yield Call(INFO, {"name": name, "version": version, "alias": alias})
    if data.get("modelVersion"):
        return ModelVersion.from_graphql(data["modelVersion"])
    if data.get("model") is None:
        raise NotFoundError(codes.MODEL_NOT_FOUND, f"model {name!r} does not exist")
    what = f"version {version}" if version is not None else f"alias {alias!r}" if alias else "a version"
    raise NotFoundError(codes.MODEL_VERSION_NOT_FOUND, f"model {name!r} has no {what}")


def models(filter: dict[str, Any]) -> Flow[list[Model]]:
    variables = {"first": 100, "filter": filter or None}
    return (yield from all_pages(MODELS, variables, "models", "nodes", Model.from_graphql))


def models_page(first: int, after: str | None, filter: dict[str, Any]) -> Flow[Page[Model]]:
    variables = {"first": first, "after": after, "filter": filter or None}
    return (yield from one_page(MODELS, variables, "models", "nodes", Model.from_graphql))


def stats(by: Sequence[str], interval: str | None, filter: dict[str, Any]) -> Flow[list[StatsRow]]:
    variables = {"groupBy": [b.upper() for b in by], "interval": interval, "filter": filter or None}
    return (yield from all_pages(STATS, variables, "downloadStats", "rows", StatsRow.from_graphql))


def register_operations(bodies: Sequence[str]) -> Flow[list[RegisteredOperation]]:
    variables = {"input": {"operations": list(bodies)}}
    found = yield from mutation(REGISTER_OPERATIONS, variables, "registerOperations")
    return [RegisteredOperation.from_graphql(op) for op in found["operations"]]


def request_download(
    name: str, version: int | None, mode: str, alias: str | None, resumes: str | None
) -> Flow[DownloadTicket]:
    request = {"name": name, "version": version, "alias": alias, "mode": mode, "resumes": resumes}
    variables = {"input": {k: v for k, v in request.items() if v is not None}}
    return DownloadTicket.from_graphql((yield from mutation(REQUEST_DOWNLOAD, variables, "requestDownload")))


def download(
    name: str, dest: Path, version: int | None, alias: str | None, presigned: bool, progress: Progress | None
) -> Flow[DownloadResult]:
    """Downloads, verifies and renames into place; a file failing its SHA-256 is fetched again once."""
    name, version, alias = resolve(name, version, alias)
    started = time.perf_counter()
    for attempt in (1, 2):
        partial = Partial(dest)
        have, meta = partial.resumable(name, version)
        mode = "PRESIGNED" if presigned else "STREAM"
        resumes = meta.get("download") if have and not presigned else None
        try:
            ticket = yield from request_download(name, version, mode, alias, resumes)
        except InvalidInputError as exc:
            if exc.details.get("field") != "resumes":
                raise
            ticket = yield from request_download(name, version, mode, alias, None)
        if have and (meta.get("version") != ticket.version or have > ticket.size):
            partial.discard()
            have = 0
        partial.record(name, ticket)
        seed = (
            (yield Blocking(functools.partial(hash_file, partial.part, have))) if have else hashlib.sha256()
        )
        sink = Sink(partial, have, ticket.size, seed, progress, offset=have)
        if have < ticket.size:
            headers = {"Range": f"bytes={have}-", "If-Range": meta.get("etag") or ticket.etag} if have else {}
            yield Fetch(ticket.url, headers, sink)
        received = sink.offset + sink.written
        if received != ticket.size:
            raise ModelhubError(
                codes.INCOMPLETE, f"got {received} of {ticket.size} bytes; run again to resume"
            )
        digest = sink.digest.hexdigest()
        if ticket.sha256 is not None:
            yield from report_verification(ticket.download_id, digest == ticket.sha256)
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
                codes.CHECKSUM_MISMATCH,
                f"the downloaded file has SHA-256 {digest}, the server's is {ticket.sha256}",
                {"expected": ticket.sha256, "actual": digest},
            )
    raise AssertionError("unreachable")


def report_verification(download_id: str, matches: bool) -> Flow[None]:
    """Tells the server the verdict of the SHA-256 check (its `verified` / `mismatched` figures). A report
    that fails (a server from before reports, a lost connection) does not fail the download."""
    with contextlib.suppress(ModelhubError, httpx.HTTPError):
        yield from mutation(
            REPORT_VERIFICATION, {"input": {"download": download_id, "sha256Matches": matches}},
            "reportDownloadVerification",
        )  # fmt: skip
