"""Domain exceptions raised by the use-case modules; free of any framework type or protocol status.

An error with fields is a dataclass (`@error`) whose class-level `text` is its message, a `str.format`
template over its attributes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar, dataclass_transform

from . import codes


class _Attributes:
    """An object's attributes (properties too) as the mapping `str.format_map` reads."""

    def __init__(self, source: object) -> None:
        self._source = source

    def __getitem__(self, key: str) -> Any:
        return getattr(self._source, key)


class DomainError(Exception):
    """An expected failure, reported to the client as a typed error."""

    code = codes.ERROR
    text: ClassVar[str] = "an expected failure"  # the message when none is given: a template over attributes

    def __init__(self, message: str | None = None) -> None:
        message = self.text.format_map(_Attributes(self)) if message is None else message
        super().__init__(message)
        self.message = message

    def __post_init__(self) -> None:
        DomainError.__init__(self)  # a dataclass subclass: its fields are set, its message follows


E = TypeVar("E", bound=DomainError)


@dataclass_transform(eq_default=False)
def error(cls: type[E]) -> type[E]:
    """Makes a domain error with fields a dataclass (`eq=False`: it stays hashable; `repr=False`: it keeps an
    exception's repr)."""
    return dataclass(eq=False, repr=False)(cls)


class InvalidInput(DomainError):
    code = codes.INVALID_INPUT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RangeBeyondRetention(InvalidInput):
    """A question only raw events answer reaches back past the retention horizon, where raw events may be
    gone (MODELHUB_EVENT_RETENTION_DAYS): answering it would depend on what has expired yet."""

    code = codes.RANGE_BEYOND_RETENTION

    def __init__(self, field: str, horizon: str) -> None:
        super().__init__(
            field,
            f"reaches past the retention horizon ({horizon}): raw download events older than that are "
            "deleted, and this question (exact, or grouped or filtered by what only raw events keep) needs "
            "them; start at or after the horizon, or ask without exact/ENGINEER/STATUS",
        )


class Forbidden(DomainError):
    """The caller may not do this (not the model's owner); a top-level error, not a union member."""

    code = codes.FORBIDDEN


@error
class ModelNotFound(DomainError):
    code = codes.MODEL_NOT_FOUND
    text = "model {name!r} does not exist"

    name: str


@error
class ModelVersionError(DomainError):
    """A failure about one version of a model."""

    name: str
    version: int


class ModelVersionAlreadyExists(ModelVersionError):
    code = codes.MODEL_VERSION_ALREADY_EXISTS
    text = "model {name!r} version {version} already exists"


@error
class ModelVersionNotFound(DomainError):
    code = codes.MODEL_VERSION_NOT_FOUND
    text = "model {name!r} has no {what}"

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def what(self) -> str:
        version, alias = self.version, self.alias
        return f"version {version}" if version is not None else f"alias {alias!r}" if alias else "a version"


class ModelVersionArchived(ModelVersionError):
    code = codes.MODEL_VERSION_ARCHIVED
    text = "model {name!r} version {version} is archived"


class ObjectDeleted(ModelVersionError):
    """The version is a tombstone: `modelhub prune` deleted its artifact (history and figures are kept)."""

    code = codes.OBJECT_DELETED
    text = (
        "model {name!r} version {version} was pruned: its artifact has been deleted (nobody had "
        "downloaded it for a long time); its history and figures are kept"
    )


@error
class AliasNotFound(DomainError):
    code = codes.ALIAS_NOT_FOUND
    text = "model {name!r} has no alias {alias!r}"

    name: str
    alias: str


@error
class StorageObjectNotFound(DomainError):
    code = codes.STORAGE_OBJECT_NOT_FOUND
    text = "no object at s3://{bucket}/{key}"

    bucket: str
    key: str


@error
class ChecksumMismatch(DomainError):
    """The artifact's bytes are not those whose SHA-256 registration (or an upload) declared."""

    code = codes.CHECKSUM_MISMATCH
    text = "{what} has SHA-256 {actual}, not the declared {expected}"

    expected: str
    actual: str
    what: str = "the artifact"


@error
class ArtifactChanged(ModelVersionError):
    """The object behind a version is not the one registered (its ETag changed): refused, not served."""

    code = codes.ARTIFACT_CHANGED
    text = (
        "the artifact of model {name!r} version {version} changed in the store since it was registered "
        "(ETag {registered_etag} then, {current_etag} now); register the new object as a new version"
    )

    registered_etag: str
    current_etag: str


@error
class UploadNotFound(DomainError):
    """No open upload has this id (never issued, already expired, or cleaned up)."""

    code = codes.UPLOAD_NOT_FOUND
    text = "upload {upload_id} {why}"

    upload_id: str
    why: str = "does not exist or has expired"


@error
class UploadInProgress(DomainError):
    """Another PUT is sending this upload's bytes to this instance now: one upload stages one copy at a
    time, so a declared size bounds the disk it can take."""

    code = codes.UPLOAD_IN_PROGRESS
    text = "upload {upload_id} is receiving its bytes on another request; wait for it, or start a new upload"

    upload_id: str


class UploadAlreadyReceived(DomainError):
    """The upload's bytes already arrived and were put in place: a later (or concurrent) PUT cannot replace
    them."""

    code = codes.UPLOAD_ALREADY_RECEIVED
    text = "upload {upload_id} has already received its bytes; they cannot be replaced (start a new upload)"

    upload_id: str


@error
class ChecksumPending(ModelVersionError):
    """The version's SHA-256 has not been verified yet and its store does not vouch for the bytes: it is not
    served until the verifier (or a download that hashes it) has checked them."""

    code = codes.CHECKSUM_PENDING
    text = (
        "model {name!r} version {version}: its artifact's SHA-256 is still being verified; try again "
        "in {retry_after:g} s"
    )

    retry_after: float


class WebhookNotFound(DomainError):
    code = codes.WEBHOOK_NOT_FOUND
    text = "no webhook has this id"


class DeliveryNotFound(DomainError):
    code = codes.DELIVERY_NOT_FOUND
    text = "no webhook delivery has this id"


class StorageUnavailable(Exception):
    """The object store could not be reached or answered with an unexpected error."""


# What clients are told about an outage: fixed texts (a driver's own message names hosts, ports and paths).
OUTAGE_MESSAGES = {
    codes.DATABASE_TIMEOUT: "the database did not answer within the request's deadline; try again",
    codes.DATABASE_UNAVAILABLE: "the database is unavailable; try again shortly",
    codes.STORAGE_UNAVAILABLE: "the object store is unavailable; try again shortly",
}


class DatabaseUnavailable(Exception):
    """The database stopped answering (its watch is down): the request is answered now, not after a hang."""


@error
class RangeNotSatisfiable(DomainError):
    code = codes.RANGE_NOT_SATISFIABLE
    text = "requested range is not satisfiable for an object of {size} bytes"

    size: int


class TicketProblem(StrEnum):
    MALFORMED = "MALFORMED"
    UNKNOWN = "UNKNOWN"
    FORBIDDEN = "FORBIDDEN"  # signed for something else, or tampered with
    EXPIRED = "EXPIRED"
    USED = "USED"


class TicketInvalid(DomainError):
    """A download ticket that is malformed, tampered, expired, unknown or already used."""

    code = codes.TICKET_INVALID

    def __init__(self, message: str, problem: TicketProblem) -> None:
        super().__init__(message)
        self.problem = problem


class Unauthenticated(DomainError):
    """The caller's identity is malformed (or, with tokens, missing or invalid)."""

    code = codes.UNAUTHENTICATED
