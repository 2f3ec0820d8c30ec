"""Beanie documents, their indexes, and `ALL_DOCUMENTS` for `init_beanie`, by domain: `registry` (models,
versions, alias moves, uploads), `downloads` (download events), `rollups` (the rollup collections), `access`
(tokens, projects, persisted operations, audit), `webhooks` (webhooks, deliveries, stream cursors). Every name
is imported from here (`from graphql_api.documents import ModelVersion`)."""

from __future__ import annotations

from beanie import Document

from .access import (
    ApiToken,
    AuditEvent,
    AuditKind,
    PersistedOperation,
    Project,
    ProjectGrant,
    ProjectVisibility,
    TokenGrant,
)
from .common import utcnow
from .downloads import (
    TERMINAL_STATUSES,
    ClientKind,
    DownloadEvent,
    DownloadMode,
    DownloadStatus,
    RollupStage,
)
from .registry import (
    AliasChange,
    ChecksumStatus,
    Identity,
    ModelVersion,
    RegisteredModel,
    Upload,
    UploadStatus,
    VersionNotes,
)
from .rollups import (
    BucketCounts,
    DailyModelRollup,
    DailyTotalRollup,
    DownloadRollup,
    HourlyModelRollup,
    HourlyRollup,
    HourlyTotalRollup,
    PerVersionAndMode,
    RollupBucket,
    RollupFigures,
    rollup_indexes,
)
from .webhooks import DeliveryStatus, StreamCursor, Webhook, WebhookDelivery

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
    DailyTotalRollup,
    HourlyTotalRollup,
    AuditEvent,
    Webhook,
    WebhookDelivery,
    StreamCursor,
]

__all__ = [
    "ALL_DOCUMENTS",
    "TERMINAL_STATUSES",
    "AliasChange",
    "ApiToken",
    "AuditEvent",
    "AuditKind",
    "BucketCounts",
    "ChecksumStatus",
    "ClientKind",
    "DailyModelRollup",
    "DailyTotalRollup",
    "DeliveryStatus",
    "DownloadEvent",
    "DownloadMode",
    "DownloadRollup",
    "DownloadStatus",
    "HourlyModelRollup",
    "HourlyRollup",
    "HourlyTotalRollup",
    "Identity",
    "ModelVersion",
    "PerVersionAndMode",
    "PersistedOperation",
    "Project",
    "ProjectGrant",
    "ProjectVisibility",
    "RegisteredModel",
    "RollupBucket",
    "RollupFigures",
    "RollupStage",
    "StreamCursor",
    "TokenGrant",
    "Upload",
    "UploadStatus",
    "VersionNotes",
    "Webhook",
    "WebhookDelivery",
    "rollup_indexes",
    "utcnow",
]
