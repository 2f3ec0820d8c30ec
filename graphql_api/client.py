"""The modelhub SDK over HTTP, synchronous (`ModelhubClient`) and asynchronous (`AsyncModelhubClient`).

It imports no server module: httpx only. The server and identity come from the arguments or from
`MODELHUB_URL`, `MODELHUB_TOKEN` (bearer token) and `MODELHUB_ENGINEER` (X-Engineer-ID, header mode).
Every error the server reports is raised as a typed `ModelhubError` subclass carrying its `code`.

Downloads go to `<dest>.part` (with `<dest>.part.json` saying which version, ETag and download it came
from), resume with `Range` + `If-Range` and `requestDownload(resumes:)` so that the server counts one
download, are checked for size and SHA-256, and are renamed into place atomically. A checksum mismatch
deletes the partial file and starts over once; a second one raises `ChecksumMismatchError`.

Results are typed (`graphql_api.sdk.types`, re-exported here): `ModelVersion`, `Model`, `DownloadTicket`,
`DownloadResult`, `StatsRow`, `Page`, ...: frozen dataclasses with snake_case fields.

Each operation is written once, as a generator ("flow") that yields the I/O it needs (`Call`, `Put`,
`Fetch`, `Blocking`) and gets the answers back; `ModelhubClient` and `AsyncModelhubClient` only run those
steps, synchronously or awaited. The code lives in the `graphql_api.sdk` package, one module per concern; this
module is the stable import path and names the public API.
"""

from __future__ import annotations

# `X as X` imports: names outside `__all__` that code written against the single-module SDK imported from
# here (DOCUMENTS, SDK_VERSION, declared_kind, ...).
from .sdk.aio import AsyncModelhubClient
from .sdk.documents import DOCUMENTS as DOCUMENTS
from .sdk.documents import REGISTER_OPERATIONS as REGISTER_OPERATIONS
from .sdk.errors import ERRORS as ERRORS
from .sdk.errors import (
    AlreadyExistsError,
    ArchivedError,
    ArtifactChangedError,
    AuthError,
    ChecksumMismatchError,
    InvalidInputError,
    ModelhubError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    error_for,
)
from .sdk.errors import ObjectDeletedError as ObjectDeletedError
from .sdk.errors import unreachable as unreachable
from .sdk.files import CHUNK as CHUNK
from .sdk.files import Progress as Progress
from .sdk.files import file_digest
from .sdk.flows import parse_ref
from .sdk.sync import ModelhubClient
from .sdk.transport import CI_VARIABLES as CI_VARIABLES
from .sdk.transport import DEFAULT_URL as DEFAULT_URL
from .sdk.transport import SDK_VERSION as SDK_VERSION
from .sdk.transport import USER_AGENT as USER_AGENT
from .sdk.transport import declared_kind as declared_kind
from .sdk.types import (
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
