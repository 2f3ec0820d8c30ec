"""The registry's documents: models, their versions, alias moves, and the uploads that become versions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from beanie import Document
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from .common import utcnow


class Identity(BaseModel):
    """What a model and each of its versions say about themselves: name, project, owner, notes, labels."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    project_name: str
    owner: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)


class RegisteredModel(Document, Identity):
    """A model as a whole: one per name, with its project, owner, aliases and versions."""

    # alias → version number; an alias is never all digits, so it cannot be taken for a version.
    aliases: dict[str, int] = Field(default_factory=dict)
    # Bumped by every alias move in the same update: orders the moves exactly, however they race.
    alias_moves: int = 0
    # When the last alias move took effect (written by the same update): the next move's time is never
    # earlier, so the history's times follow its order (what `modelVersion(alias:, at:)` relies on).
    alias_moved_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "models"
        indexes = [
            IndexModel([("name", ASCENDING)], unique=True, name="name_unique"),
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created_at"),
            IndexModel([("updated_at", DESCENDING), ("_id", DESCENDING)], name="updated_at"),
            IndexModel([("project_name", ASCENDING), ("name", ASCENDING)], name="project_name"),
            IndexModel([("owner", ASCENDING), ("name", ASCENDING)], name="owner_name"),
            # One project's or owner's newest models, in time windows (db/paging.py) bounded by the index.
            IndexModel(
                [("project_name", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                name="project_created",
            ),
            IndexModel(
                [("project_name", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)],
                name="project_updated",
            ),
            IndexModel(
                [("owner", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                name="owner_created",
            ),
            IndexModel([("tags", ASCENDING)], name="tags"),
        ]


class ChecksumStatus(StrEnum):
    """Where a version's SHA-256 stands: PENDING until the object has been hashed (or the store vouched for
    it), VERIFIED once `sha256` is the object's, MISMATCH when the object is not what registration said
    (downloads refused), UNAVAILABLE when it could not be hashed (gone, or changed since registration)."""

    PENDING = "PENDING"
    VERIFIED = "VERIFIED"
    MISMATCH = "MISMATCH"
    UNAVAILABLE = "UNAVAILABLE"


class VersionNotes(Identity):
    """What a version says about itself beside its artifact: kept by versions and by the uploads that
    will become versions."""

    metadata: dict[str, Any] = Field(default_factory=dict)

    def notes(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in VersionNotes.model_fields}


class ModelVersion(Document, VersionNotes):
    """One registered version of a model; its artifact is one object in a store."""

    version: int
    bucket: str
    key: str
    size_bytes: int
    etag: str
    content_type: str
    created_at: datetime = Field(default_factory=utcnow)
    archived: bool = False
    # The object's SHA-256 (hex) once known: given by the store, or computed by the checksum verifier.
    sha256: str | None = None
    # What registration said the SHA-256 is, until the verifier has checked it.
    expected_sha256: str | None = None
    checksum_status: ChecksumStatus = ChecksumStatus.PENDING
    checksum_error: str | None = None
    # Usage-driven clean-up (prune.py): when `modelhub prune --apply` archived it (its grace period runs from
    # here; any archive or unarchive clears it), a deletion of its object under way, and the tombstone.
    prune_marked_at: datetime | None = None
    object_deleting: bool = False
    object_deleted: bool = False
    object_deleted_at: datetime | None = None

    class Settings:
        name = "model_versions"
        indexes = [
            IndexModel(
                [("name", ASCENDING), ("version", ASCENDING)], unique=True, name="name_version_unique"
            ),
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created_at"),
            IndexModel([("project_name", ASCENDING), ("created_at", DESCENDING)], name="project_created"),
            IndexModel([("owner", ASCENDING), ("created_at", DESCENDING)], name="owner_created"),
            IndexModel([("tags", ASCENDING)], name="tags"),
            IndexModel([("checksum_status", ASCENDING)], name="checksum_status"),
            IndexModel([("bucket", ASCENDING), ("key", ASCENDING)], name="bucket_key"),
        ]


class AliasChange(Document):
    """One move of an alias: set (from None or another version), moved, or removed (to None)."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    alias: str
    from_version: int | None
    to_version: int | None
    changed_by: str
    # The model's `alias_moves` after this move: the order of moves, whatever order the records land in.
    sequence: int = 0
    changed_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "alias_changes"
        indexes = [
            IndexModel([("model_name", ASCENDING), ("sequence", DESCENDING)], name="model_sequence"),
        ]


class UploadStatus(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"


class Upload(Document, VersionNotes):
    """An artifact upload in progress: where its bytes go, what they must be, and the version they make."""

    version: int | None = None
    bucket: str
    key: str
    size_bytes: int
    sha256: str
    content_type: str
    multipart_id: str | None = None
    part_bytes: int | None = None
    # Local store: the bytes arrived through the app and were verified.
    received: bool = False
    status: UploadStatus = UploadStatus.PENDING
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    registered_version: int | None = None

    class Settings:
        name = "uploads"
        indexes = [
            IndexModel([("status", ASCENDING), ("expires_at", ASCENDING)], name="status_expires"),
            IndexModel([("bucket", ASCENDING), ("key", ASCENDING)], name="bucket_key"),
        ]
