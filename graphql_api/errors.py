"""Domain exceptions raised by the use-case modules; free of any framework type or protocol status."""

from __future__ import annotations

from enum import StrEnum

from . import codes


class DomainError(Exception):
    """An expected failure, reported to the client as a typed error."""

    code = codes.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class ModelVersionAlreadyExists(DomainError):
    code = codes.MODEL_VERSION_ALREADY_EXISTS

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"model {name!r} version {version} already exists")
        self.name = name
        self.version = version


class ModelNotFound(DomainError):
    code = codes.MODEL_NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} does not exist")
        self.name = name


class ModelVersionNotFound(DomainError):
    code = codes.MODEL_VERSION_NOT_FOUND

    def __init__(self, name: str, version: int | None = None, alias: str | None = None) -> None:
        what = f"version {version}" if version is not None else f"alias {alias!r}" if alias else "a version"
        super().__init__(f"model {name!r} has no {what}")
        self.name = name
        self.version = version
        self.alias = alias


class ModelVersionArchived(DomainError):
    code = codes.MODEL_VERSION_ARCHIVED

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"model {name!r} version {version} is archived")
        self.name = name
        self.version = version


class ObjectDeleted(DomainError):
    """The version is a tombstone: `modelhub prune` deleted its artifact (history and figures are kept)."""

    code = codes.OBJECT_DELETED

    def __init__(self, name: str, version: int) -> None:
        super().__init__(
            f"model {name!r} version {version} was pruned: its artifact has been deleted (nobody had "
            "downloaded it for a long time); its history and figures are kept"
        )
        self.name = name
        self.version = version


class AliasNotFound(DomainError):
    code = codes.ALIAS_NOT_FOUND

    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"model {name!r} has no alias {alias!r}")
        self.name = name
        self.alias = alias


class StorageObjectNotFound(DomainError):
    code = codes.STORAGE_OBJECT_NOT_FOUND

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"no object at s3://{bucket}/{key}")
        self.bucket = bucket
        self.key = key


class ChecksumMismatch(DomainError):
    """The artifact's bytes are not those whose SHA-256 registration (or an upload) declared."""

    code = codes.CHECKSUM_MISMATCH

    def __init__(self, expected: str, actual: str, what: str = "the artifact") -> None:
        super().__init__(f"{what} has SHA-256 {actual}, not the declared {expected}")
        self.expected = expected
        self.actual = actual


class ArtifactChanged(DomainError):
    """The object behind a version is not the one registered (its ETag changed): refused, not served."""

    code = codes.ARTIFACT_CHANGED

    def __init__(self, name: str, version: int, registered_etag: str, current_etag: str) -> None:
        super().__init__(
            f"the artifact of model {name!r} version {version} changed in the store since it was registered "
            f"(ETag {registered_etag} then, {current_etag} now); register the new object as a new version"
        )
        self.name = name
        self.version = version
        self.registered_etag = registered_etag
        self.current_etag = current_etag


class UploadNotFound(DomainError):
    """No open upload has this id (never issued, already expired, or cleaned up)."""

    code = codes.UPLOAD_NOT_FOUND

    def __init__(self, upload_id: str, why: str = "does not exist or has expired") -> None:
        super().__init__(f"upload {upload_id} {why}")
        self.upload_id = upload_id


class UploadAlreadyReceived(DomainError):
    """The upload's bytes already arrived and were put in place: a later (or concurrent) PUT cannot replace
    them."""

    code = codes.UPLOAD_ALREADY_RECEIVED

    def __init__(self, upload_id: str) -> None:
        super().__init__(
            f"upload {upload_id} has already received its bytes; they cannot be replaced (start a new upload)"
        )
        self.upload_id = upload_id


class ChecksumPending(DomainError):
    """The version's SHA-256 has not been verified yet and its store does not vouch for the bytes: it is not
    served until the verifier (or a download that hashes it) has checked them."""

    code = codes.CHECKSUM_PENDING

    def __init__(self, name: str, version: int, retry_after: float) -> None:
        super().__init__(
            f"model {name!r} version {version}: its artifact's SHA-256 is still being verified; try again "
            f"in {retry_after:g} s"
        )
        self.name = name
        self.version = version
        self.retry_after = retry_after


class WebhookNotFound(DomainError):
    code = codes.WEBHOOK_NOT_FOUND

    def __init__(self) -> None:
        super().__init__("no webhook has this id")


class DeliveryNotFound(DomainError):
    code = codes.DELIVERY_NOT_FOUND

    def __init__(self) -> None:
        super().__init__("no webhook delivery has this id")


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


class RangeNotSatisfiable(DomainError):
    code = codes.RANGE_NOT_SATISFIABLE

    def __init__(self, size: int) -> None:
        super().__init__(f"requested range is not satisfiable for an object of {size} bytes")
        self.size = size


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
