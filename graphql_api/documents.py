"""Beanie documents, their indexes, and `ALL_DOCUMENTS` for `init_beanie`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from beanie import Document, PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from .roles import PROJECT_RANK, ProjectRole, Role


def utcnow() -> datetime:
    # Mongo keeps milliseconds; truncating here keeps in-memory and stored values equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


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


class TokenGrant(BaseModel):
    """A token's role in one project."""

    project: str
    role: ProjectRole


class ClientKind(StrEnum):
    """Who a download is for, as `client_kind.decide` tells it (the rule that decided is kept beside it)."""

    CI = "CI"
    BOT = "BOT"
    HUMAN = "HUMAN"
    UNKNOWN = "UNKNOWN"


class ApiToken(Document):
    """A bearer token, kept only as its SHA-256: the token itself is shown once, when it is created."""

    name: str
    principal: str
    # The global role (None: only `grants`); tokens made before grants existed keep theirs (see roles.py).
    role: Role | None = None
    # Its roles in single projects, on top of the project-side grants to `principal`. A list, not a
    # mapping: a project name may hold a dot, which a document key should not.
    grants: list[TokenGrant] = Field(default_factory=list)
    token_hash: str
    created_by: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    # The client kind every download with this token is recorded as (`--kind ci`); None: decided per request.
    client_kind: ClientKind | None = None

    def grant_map(self) -> dict[str, ProjectRole]:
        """Project -> role (the highest, should a project be listed twice)."""
        found: dict[str, ProjectRole] = {}
        for g in self.grants:
            if g.project not in found or PROJECT_RANK[g.role] > PROJECT_RANK[found[g.project]]:
                found[g.project] = g.role
        return found

    class Settings:
        name = "api_tokens"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True, name="token_hash_unique"),
            IndexModel([("name", ASCENDING)], unique=True, name="name_unique"),
        ]


class ProjectVisibility(StrEnum):
    """INTERNAL: every authenticated principal may read the project; PRIVATE: its grantees only."""

    INTERNAL = "INTERNAL"
    PRIVATE = "PRIVATE"


class ProjectGrant(BaseModel):
    """A role in a project given to a principal by name (whatever token or sign-on it comes with)."""

    principal: str
    role: ProjectRole
    granted_by: str
    granted_at: datetime = Field(default_factory=utcnow)


class Project(Document):
    """A project: a permission boundary over its models, their versions, downloads and figures."""

    name: str
    visibility: ProjectVisibility = ProjectVisibility.INTERNAL
    grants: list[ProjectGrant] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "projects"
        indexes = [
            IndexModel([("name", ASCENDING)], unique=True, name="name_unique"),
            IndexModel([("grants.principal", ASCENDING)], name="grant_principal"),
        ]


class PersistedOperation(Document):
    """A GraphQL document registered by hash (Apollo's persisted-query id: the SHA-256 of its exact text)."""

    id: str  # type: ignore[assignment]  # the hex SHA-256 of `body`
    body: str
    name: str | None = None
    source: str  # who registered it: "ui" (the server's own page) or the engineer who pushed it
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "persisted_operations"


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


class RollupStage(StrEnum):
    """A rollup stage of a download event (DownloadEvent.stages), which the roller folds into the rollups
    (analytics/roller.py)."""

    RECORDED = "recorded"  # a ticket issued or a one-step download begun
    FINISHED = "finished"  # a terminal status
    VERIFIED = "verified"  # the client reported its SHA-256 verdict


class DownloadMode(StrEnum):
    STREAM = "STREAM"
    PRESIGNED = "PRESIGNED"


class DownloadStatus(StrEnum):
    ISSUED = "ISSUED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


TERMINAL_STATUSES = (DownloadStatus.COMPLETED, DownloadStatus.ABORTED, DownloadStatus.FAILED)


class DownloadEvent(Document):
    """One download: issued by `requestDownload` or the one-step route, then streamed (or handed to S3)."""

    model_config = ConfigDict(protected_namespaces=())

    model_id: PydanticObjectId
    model_name: str
    model_version: int
    project_name: str
    size_bytes: int
    engineer: str
    user_agent: str | None = None
    client_address: str | None = None
    # The alias the download asked for (`prod`), when it asked by alias: `version` is what it resolved to.
    requested_alias: str | None = None
    mode: DownloadMode
    # CI, BOT, HUMAN or UNKNOWN, and the rule of `client_kind.decide` that said so.
    client_kind: ClientKind = ClientKind.UNKNOWN
    client_kind_rule: str | None = None
    # The SDK release from the user agent (`modelhub-sdk/<version>`), None for any other client.
    client_version: str | None = None
    status: DownloadStatus = DownloadStatus.ISSUED
    bytes_sent: int = 0
    range_start: int | None = None
    range_end: int | None = None
    # When the download was asked for (ticket issued, or one-step request); never changes, so that
    # keyset pagination on it is stable.
    started_at: datetime = Field(default_factory=utcnow)
    # When bytes began to flow (STREAM only); durationSeconds runs from here to finishedAt.
    transfer_started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    error: str | None = None
    # The id of the last state change (claim, finish): a write retried after a lost acknowledgement finds
    # its own id here and knows it already happened.
    transition_id: str | None = None
    # The earlier download (same requester, same version) this one resumes, as `requestDownload(resumes:)`.
    resumes: PydanticObjectId | None = None
    # The first byte of the chain of resumed downloads this one belongs to (set when it finishes).
    chain_start: int | None = None
    # This event delivered the object's last byte and its chain began at byte 0: the one event that counts
    # as a completed download (a Range peek or the first leg of a resumed download does not).
    completes: bool = False
    # The client's verdict on the SHA-256 of what it received (reportDownloadVerification): reported once.
    sha256_matches: bool | None = None
    verified_at: datetime | None = None
    # The rollup stages this event owes (analytics/roller.py): RollupStage →
    # when it was staged (this server's clock). An event without stages (written before the roller, or by
    # bulk loads) was counted when it was written.
    stages: dict[str, datetime] = Field(default_factory=dict)
    # The latest of `stages` (indexed): the roller and the readers find the stages after the watermark by it.
    staged_at: datetime | None = None

    @classmethod
    def of_version(cls, version: ModelVersion, **fields: Any) -> DownloadEvent:
        """A download of `version`: its model, number, project and size copied from it."""
        return cls(
            model_id=version.id,
            model_name=version.name,
            model_version=version.version,
            project_name=version.project_name,
            size_bytes=version.size_bytes,
            **fields,
        )

    class Settings:
        name = "download_events"
        indexes = [
            IndexModel([("started_at", DESCENDING), ("_id", DESCENDING)], name="started_at"),
            IndexModel([("model_name", ASCENDING), ("started_at", DESCENDING)], name="model_started"),
            IndexModel([("model_id", ASCENDING), ("status", ASCENDING)], name="model_status"),
            IndexModel([("project_name", ASCENDING), ("started_at", DESCENDING)], name="project_started"),
            IndexModel([("engineer", ASCENDING), ("started_at", DESCENDING)], name="engineer_started"),
            IndexModel([("status", ASCENDING), ("heartbeat_at", ASCENDING)], name="status_heartbeat"),
            IndexModel([("staged_at", ASCENDING)], name="staged_at"),
        ]


class AuditKind(StrEnum):
    """What an audit record is about."""

    MUTATION = "MUTATION"  # a root mutation field, whatever its outcome
    TOKEN = "TOKEN"  # a token made or revoked outside GraphQL (the CLI)
    REFUSED = "REFUSED"  # a refused attempt: UNAUTHENTICATED, FORBIDDEN or RATE_LIMITED, or a route's 401/403
    SIGN_IN = "SIGN_IN"  # the first sign-in of a principal this server had not seen


class AuditEvent(Document):
    """One audit record: who did what to which target, with what outcome, when and from where. Written once
    and never changed (db/audit.py offers no update); deleted only by its own retention."""

    at: datetime = Field(default_factory=utcnow)
    kind: AuditKind
    principal: str | None = None
    # The root field (`createToken`), the CLI command (`token create`) or the route (`GET /downloads`).
    action: str
    # The model, project, token, webhook or principal the action named, when it named one.
    target: str | None = None
    project: str | None = None
    # The result union's type (`ModelVersion`, `InvalidInput`), a top-level error code, or `OK`.
    outcome: str
    client_address: str | None = None
    transport: str  # "http", "websocket" or "cli"

    class Settings:
        name = "audit_events"
        indexes = [
            IndexModel([("at", DESCENDING), ("_id", DESCENDING)], name="at"),
            IndexModel([("principal", ASCENDING), ("at", DESCENDING)], name="principal_at"),
            IndexModel([("action", ASCENDING), ("at", DESCENDING)], name="action_at"),
            IndexModel([("project", ASCENDING), ("at", DESCENDING)], name="project_at"),
        ]


class RollupFigures(BaseModel):
    """What a rollup bucket holds about its downloads, whatever the bucket's length and key."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    project_name: str
    downloads: int = 0
    completed: int = 0
    aborted: int = 0
    failed: int = 0
    bytes_sent: int = 0
    duration_count: int = 0
    duration_sum: float = 0.0
    duration_max: float | None = None
    last_completed_at: datetime | None = None
    # Sparse histogram of durations: bucket index (as a string key) → count; see analytics.histograms.
    duration_hist: dict[str, int] = Field(default_factory=dict)
    # Unique engineers as a bitmap of their numbers (db/engineers.py): word index (string) → 64-bit word.
    engineer_bits: dict[str, int] = Field(default_factory=dict)


def rollup_indexes(start: str) -> list[IndexModel]:
    """A rollup collection's indexes, by its bucket-start field: a time range per model, and per project."""
    return [
        IndexModel([(start, ASCENDING), ("model_name", ASCENDING)], name=f"{start}_model"),
        IndexModel([("project_name", ASCENDING), (start, ASCENDING)], name=f"project_{start}"),
    ]


class RollupBucket(Document, RollupFigures):
    """A stored rollup bucket. `_id` is the bucket key itself, so the first writer can create it with a plain
    insert (a lost race is a DuplicateKeyError) and every writer then only `$inc`s: no upsert races."""

    id: str  # type: ignore[assignment]


class PerVersionAndMode(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: int
    mode: DownloadMode


class DownloadRollup(RollupBucket, PerVersionAndMode):
    """Downloads of one model version, project and mode on one UTC day, pre-aggregated at write time."""

    day: datetime

    class Settings:
        name = "download_rollups_daily"
        indexes = rollup_indexes("day")


class HourlyRollup(RollupBucket, PerVersionAndMode):
    """The same figures per UTC hour: a range that does not start and end on midnights is answered from
    the days and hours inside it, and raw events only for the minutes at its edges."""

    hour: datetime

    class Settings:
        name = "download_rollups_hourly"
        indexes = rollup_indexes("hour")


class DailyModelRollup(RollupBucket):
    """The same figures per UTC day and model, all its versions and modes together: what a query that
    neither filters nor groups by version or mode reads (half the buckets or fewer)."""

    day: datetime

    class Settings:
        name = "download_rollups_daily_by_model"
        indexes = rollup_indexes("day")


class HourlyModelRollup(RollupBucket):
    """The same figures per UTC hour and model, all its versions and modes together."""

    hour: datetime

    class Settings:
        name = "download_rollups_hourly_by_model"
        indexes = rollup_indexes("hour")


class Webhook(Document):
    """A receiver of registry and download events: where to POST them, which ones, and its signing key."""

    model_config = ConfigDict(protected_namespaces=())

    url: str
    events: list[str]
    # An EventQuery's fields (downloadEvents' filter): models, versions and projects apply to every event.
    filter: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    # The Standard Webhooks secret (`whsec_` + base64) it signs with; never returned after creation.
    secret: str
    enabled: bool = True
    disabled_reason: str | None = None
    # When the first of an unbroken run of failed attempts happened (None after a success).
    failing_since: datetime | None = None
    # Who created it and with which role: it never delivers what they could not read.
    created_by: str
    creator_role: str
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "webhooks"
        indexes = [IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)], name="created_at")]


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class WebhookDelivery(Document):
    """One event for one webhook: the outbox while PENDING, its history after. The `_id` is the
    `webhook-id` header, derived from the change that caused it, so a replayed change inserts nothing."""

    model_config = ConfigDict(protected_namespaces=())

    id: str  # type: ignore[assignment]  # chosen by the writer, not an ObjectId
    webhook_id: PydanticObjectId
    event_type: str
    # Deliveries of one webhook with the same key (the model name) are sent one at a time, in `seq` order.
    key: str
    seq: int
    body: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None

    class Settings:
        name = "webhook_deliveries"
        indexes = [
            IndexModel([("status", ASCENDING), ("seq", ASCENDING)], name="status_seq"),
            IndexModel([("webhook_id", ASCENDING), ("seq", DESCENDING)], name="webhook_seq"),
            IndexModel(
                [("webhook_id", ASCENDING), ("status", ASCENDING), ("seq", ASCENDING)],
                name="webhook_status_seq",
            ),
        ]


class StreamCursor(Document):
    """Where a change-stream reader stands (its resume token and event count), and who reads it now."""

    id: str  # type: ignore[assignment]  # chosen by the writer, not an ObjectId
    token: dict[str, Any] | None = None
    seq: int = 0
    holder: str | None = None
    lease_until: datetime | None = None

    class Settings:
        name = "stream_cursors"


ALL_DOCUMENTS: list[type[Document]] = [
    RegisteredModel,
    ModelVersion,
    AliasChange,
    ApiToken,
    Project,
    PersistedOperation,
    Upload,
    DownloadEvent,
    DownloadRollup,
    HourlyRollup,
    DailyModelRollup,
    HourlyModelRollup,
    AuditEvent,
    Webhook,
    WebhookDelivery,
    StreamCursor,
]
