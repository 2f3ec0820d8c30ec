"""Strawberry types and inputs of `downloadStats`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import strawberry

from .. import queries
from ..analytics.stats import StatsRow
from .downloads import DownloadMode, DownloadStatus
from .scalars import Long

DownloadDimension = queries.Dimension
TimeInterval = queries.Interval
StatsMetric = queries.StatsMetric
StatsSource = queries.StatsSource
strawberry.enum(DownloadDimension, name="DownloadDimension", description="What `downloadStats` can group by.")
strawberry.enum(
    TimeInterval,
    name="TimeInterval",
    description="Time buckets (UTC unless `timeZone` says otherwise); weeks start Monday.",
)
strawberry.enum(StatsMetric, description="What `downloadStats` rows can be ordered by.")
strawberry.enum(
    StatsSource,
    description="RAW: computed from events. ROLLUP: from daily rollups (exact counts and bytes; "
    "percentiles within about 5%; pass `exact: true` for raw percentiles).",
)


@strawberry.enum
class Direction(StrEnum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.input
class StatsOrder:
    metric: StatsMetric
    direction: Direction = Direction.DESC


@strawberry.type(description="One group of downloads: its key (null where not grouped) and its figures.")
class DownloadStatsRow:
    model_name: str | None
    model_version: int | None
    project_name: str | None
    engineer: str | None
    mode: DownloadMode | None
    status: DownloadStatus | None
    period_start: datetime | None = strawberry.field(description="Start of the time bucket, with `interval`.")
    downloads: int = strawberry.field(description="Download events (any status) started in the group.")
    completed: int
    aborted: int
    failed: int
    total_bytes: Long = strawberry.field(description="Bytes actually sent.")
    avg_duration_seconds: float | None
    p50_duration_seconds: float | None
    p95_duration_seconds: float | None
    max_duration_seconds: float | None
    unique_engineers: int
    source: StatsSource

    @classmethod
    def from_row(cls, row: StatsRow) -> DownloadStatsRow:
        return cls(
            model_name=row.model_name,
            model_version=row.model_version,
            project_name=row.project_name,
            engineer=row.engineer,
            mode=row.mode,
            status=row.status,
            period_start=row.period_start,
            downloads=row.downloads,
            completed=row.completed,
            aborted=row.aborted,
            failed=row.failed,
            total_bytes=row.total_bytes,
            avg_duration_seconds=row.avg_duration,
            p50_duration_seconds=row.p50_duration,
            p95_duration_seconds=row.p95_duration,
            max_duration_seconds=row.max_duration,
            unique_engineers=row.unique_engineers,
            source=row.source,
        )
