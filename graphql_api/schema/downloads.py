"""Strawberry types, inputs and resolvers for downloads: tickets, raw events and their filter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import strawberry

from .. import documents, queries
from .scalars import Long
from .types import PageInfo

DownloadMode = documents.DownloadMode
DownloadStatus = documents.DownloadStatus
DownloadOrder = queries.DownloadOrder
strawberry.enum(
    DownloadMode, description="STREAM: bytes flow through the server. PRESIGNED: straight from S3."
)
strawberry.enum(DownloadStatus, description="ISSUED → IN_PROGRESS → COMPLETED | ABORTED | FAILED.")
strawberry.enum(
    DownloadOrder, description="How `downloads` sorts; duration orders list finished downloads only."
)


@strawberry.type(name="DownloadEvent", description="One download of one model version.")
class DownloadEventType:
    id: strawberry.ID
    model_id: strawberry.ID
    model_name: str
    model_version: int
    project_name: str
    size_bytes: Long
    engineer: str
    user_agent: str | None
    client_address: str | None
    mode: DownloadMode
    status: DownloadStatus
    bytes_sent: Long
    range_start: Long | None = strawberry.field(description="First byte asked for with Range, if any.")
    range_end: Long | None = strawberry.field(
        description="Last byte (inclusive) asked for with Range, if any."
    )
    started_at: datetime = strawberry.field(description="When the download was requested.")
    transfer_started_at: datetime | None = strawberry.field(description="When bytes began to flow (STREAM).")
    finished_at: datetime | None
    duration_seconds: float | None = strawberry.field(description="From the first byte to the end.")
    expires_at: datetime | None = strawberry.field(description="When the ticket stops working.")
    failure_reason: str | None

    @strawberry.field(description="bytesSent / durationSeconds, once finished.")
    def bytes_per_second(self) -> float | None:
        if not self.duration_seconds:
            return None
        return float(self.bytes_sent) / self.duration_seconds

    @classmethod
    def from_doc(cls, doc: documents.DownloadEvent) -> DownloadEventType:
        return cls(
            id=strawberry.ID(str(doc.id)),
            model_id=strawberry.ID(str(doc.model_id)),
            model_name=doc.model_name,
            model_version=doc.model_version,
            project_name=doc.project_name,
            size_bytes=doc.size_bytes,
            engineer=doc.engineer,
            user_agent=doc.user_agent,
            client_address=doc.client_address,
            mode=doc.mode,
            status=doc.status,
            bytes_sent=doc.bytes_sent,
            range_start=doc.range_start,
            range_end=doc.range_end,
            started_at=doc.started_at,
            transfer_started_at=doc.transfer_started_at,
            finished_at=doc.finished_at,
            duration_seconds=doc.duration_seconds,
            expires_at=doc.expires_at,
            failure_reason=doc.error,
        )


@strawberry.type(description="Where to fetch the artifact, until `expiresAt`.")
class DownloadTicket:
    url: str
    mode: DownloadMode
    expires_at: datetime
    download: DownloadEventType


@strawberry.type
class DownloadEventEdge:
    node: DownloadEventType
    cursor: str


@strawberry.type
class DownloadEventConnection:
    edges: list[DownloadEventEdge]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(
        description="Events matching the filter, across all pages (counted only when asked for)."
    )
    async def total_count(self) -> int:
        return await self.count()

    @strawberry.field(description="The nodes of `edges`, for clients that need no cursors.")
    def nodes(self) -> list[DownloadEventType]:
        return [edge.node for edge in self.edges]


@strawberry.input(description="Every given condition must hold; list conditions match any of their values.")
class DownloadFilter:
    model_name: str | None = None
    model_names: list[str] | None = None
    version: int | None = None
    project_name: str | None = None
    project_names: list[str] | None = None
    engineer: str | None = None
    engineers: list[str] | None = None
    status: list[DownloadStatus] | None = None
    mode: DownloadMode | None = None
    since: datetime | None = strawberry.field(default=None, description="startedAt ≥ since.")
    until: datetime | None = strawberry.field(default=None, description="startedAt < until.")
    min_bytes: Long | None = strawberry.field(default=None, description="bytesSent ≥ minBytes.")

    def to_query(self) -> queries.EventQuery:
        def merged(one: str | None, many: list[str] | None) -> list[str]:
            return ([one] if one is not None else []) + list(many or [])

        models = merged(self.model_name, self.model_names)
        projects = merged(self.project_name, self.project_names)
        engineers = merged(self.engineer, self.engineers)
        return queries.EventQuery(
            model_names=models,
            version=self.version,
            project_names=projects,
            engineers=engineers,
            statuses=list(self.status or []),
            mode=self.mode,
            since=self.since,
            until=self.until,
            min_bytes=self.min_bytes,
        )
