"""Download events: one document a download, its statuses, modes and client kinds."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from beanie import Document, PydanticObjectId
from pydantic import ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from .common import utcnow
from .registry import ModelVersion


class ClientKind(StrEnum):
    """Who a download is for, as `client_kind.decide` tells it (the rule that decided is kept beside it)."""

    CI = "CI"
    BOT = "BOT"
    HUMAN = "HUMAN"
    UNKNOWN = "UNKNOWN"


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
