"""Strawberry types and inputs of `downloadStats`."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from .. import queries
from ..analytics import series as series_uc
from ..analytics.stats import StatsPage, StatsRow
from ..pagination import decode_cursor, encode_cursor
from .downloads import ClientKind, DownloadMode, DownloadStatus
from .scalars import Long
from .types import OrderDirection, PageInfo


@strawberry.enum(description="What `downloadStats` can group by.")
class DownloadDimension(Enum):
    MODEL = strawberry.enum_value("MODEL", description="The model name.")
    VERSION = strawberry.enum_value("VERSION", description="The version number (group by MODEL too).")
    PROJECT = strawberry.enum_value("PROJECT", description="The project.")
    ENGINEER = strawberry.enum_value("ENGINEER", description="Who downloaded (raw events only).")
    MODE = strawberry.enum_value("MODE", description="STREAM or PRESIGNED.")
    STATUS = strawberry.enum_value("STATUS", description="The download's status (raw events only).")
    CLIENT_KIND = strawberry.enum_value("CLIENT_KIND", description="CI, BOT, HUMAN or UNKNOWN.")
    CLIENT_VERSION = strawberry.enum_value(
        "CLIENT_VERSION", description="The SDK release (null: not the SDK) (raw events only)."
    )
    ALIAS = strawberry.enum_value(
        "ALIAS",
        description="The alias the download asked for (`requestedAlias`; null when it asked by number or "
        "for the latest; raw events only). With VERSION: who still pulls what an alias used to point at.",
    )


@strawberry.enum(description="Time buckets (UTC unless `timeZone` says otherwise); weeks start on Monday.")
class TimeInterval(Enum):
    HOUR = strawberry.enum_value(
        "HOUR", description="Hours (from the hourly rollups and raw edges; a range of at most 31 days)."
    )
    DAY = strawberry.enum_value("DAY", description="Days.")
    WEEK = strawberry.enum_value("WEEK", description="Weeks from Monday.")
    MONTH = strawberry.enum_value("MONTH", description="Calendar months.")


@strawberry.enum(description="What `downloadStats` rows can be ordered by.")
class StatsMetric(Enum):
    PERIOD_START = strawberry.enum_value(
        "PERIOD_START", description="The bucket's start (needs an interval)."
    )
    DOWNLOADS = strawberry.enum_value("DOWNLOADS", description="Download events of any status.")
    COMPLETED = strawberry.enum_value("COMPLETED", description="Completed downloads.")
    ABORTED = strawberry.enum_value("ABORTED", description="Aborted downloads.")
    FAILED = strawberry.enum_value("FAILED", description="Failed downloads.")
    TOTAL_BYTES = strawberry.enum_value("TOTAL_BYTES", description="Bytes sent.")
    AVG_DURATION = strawberry.enum_value("AVG_DURATION", description="Mean duration.")
    P50_DURATION = strawberry.enum_value("P50_DURATION", description="Median duration.")
    P95_DURATION = strawberry.enum_value("P95_DURATION", description="95th percentile duration.")
    MAX_DURATION = strawberry.enum_value("MAX_DURATION", description="Longest duration.")
    UNIQUE_ENGINEERS = strawberry.enum_value("UNIQUE_ENGINEERS", description="Distinct engineers.")
    DISTINCT_DOWNLOADS = strawberry.enum_value(
        "DISTINCT_DOWNLOADS", description="Distinct (engineer, model version) pairs."
    )


@strawberry.enum(description="Where `downloadStats` computed its answer.")
class StatsSource(Enum):
    RAW = strawberry.enum_value("RAW", description="From raw events: exact, slower on long ranges.")
    ROLLUP = strawberry.enum_value(
        "ROLLUP",
        description="From daily rollups: exact counts and bytes; percentiles within about 5% "
        "(pass `exact: true` for raw percentiles).",
    )
    HYBRID = strawberry.enum_value(
        "HYBRID",
        description="A range off midnights: whole days and hours from rollups, raw events for the minutes at "
        "each edge; exact like ROLLUP.",
    )


@strawberry.input(description="How to order `downloadStats` rows.")
class StatsOrder:
    field: StatsMetric = strawberry.field(description="The metric to order by.")
    direction: OrderDirection = strawberry.field(default=OrderDirection.DESC, description="Which way.")


@strawberry.type(description="One group of downloads: its key (null where not grouped) and its figures.")
class DownloadStatsRow:
    model_name: str | None = strawberry.field(description="The model, when grouped by MODEL.")
    version: int | None = strawberry.field(description="The version, when grouped by VERSION.")
    project_name: str | None = strawberry.field(description="The project, when grouped by PROJECT.")
    engineer: str | None = strawberry.field(description="The engineer, when grouped by ENGINEER.")
    mode: DownloadMode | None = strawberry.field(description="The mode, when grouped by MODE.")
    status: DownloadStatus | None = strawberry.field(description="The status, when grouped by STATUS.")
    client_kind: ClientKind | None = strawberry.field(
        description="The client kind, when grouped by CLIENT_KIND."
    )
    client_version: str | None = strawberry.field(
        description="The SDK release, when grouped by CLIENT_VERSION (null: not the SDK)."
    )
    requested_alias: str | None = strawberry.field(
        description="The alias asked for, when grouped by ALIAS (null: downloads not asked by alias)."
    )
    period_start: datetime | None = strawberry.field(description="Start of the time bucket, with `interval`.")
    downloads: int = strawberry.field(description="Download events (any status) started in the group.")
    completed: int = strawberry.field(description="Completed downloads.")
    aborted: int = strawberry.field(description="Aborted downloads.")
    failed: int = strawberry.field(description="Failed downloads.")
    verified: int = strawberry.field(
        description="Downloads whose client reported the SHA-256 matched (reportDownloadVerification)."
    )
    mismatched: int = strawberry.field(description="Downloads whose client reported a SHA-256 mismatch.")
    total_bytes: Long = strawberry.field(description="Bytes actually sent.")
    avg_duration_seconds: float | None = strawberry.field(description="Mean duration of finished downloads.")
    p50_duration_seconds: float | None = strawberry.field(description="Median duration.")
    p95_duration_seconds: float | None = strawberry.field(description="95th percentile duration.")
    max_duration_seconds: float | None = strawberry.field(description="Longest duration.")
    p50_throughput_bytes_per_second: float | None = strawberry.field(
        description="Median throughput (bytes sent / duration) of transfers that sent bytes over a duration."
    )
    p95_throughput_bytes_per_second: float | None = strawberry.field(
        description="95th percentile throughput (bytes per second); rollups: within about 5%, like durations."
    )
    unique_engineers: int = strawberry.field(description="Distinct engineers who downloaded.")
    distinct_downloads: int = strawberry.field(
        description="Distinct (engineer, model version) pairs among the group's download events: retries and "
        "re-downloads of one version by one engineer count once per row (per period with `interval`)."
    )

    @classmethod
    def from_row(cls, row: StatsRow) -> DownloadStatsRow:
        return cls(
            model_name=row.model_name,
            version=row.model_version,
            project_name=row.project_name,
            engineer=row.engineer,
            mode=DownloadMode(row.mode.value) if row.mode else None,
            status=DownloadStatus(row.status.value) if row.status else None,
            client_kind=ClientKind(row.client_kind.value) if row.client_kind else None,
            client_version=row.client_version,
            requested_alias=row.requested_alias,
            period_start=row.period_start,
            downloads=row.downloads,
            completed=row.completed,
            aborted=row.aborted,
            failed=row.failed,
            verified=row.verified,
            mismatched=row.mismatched,
            total_bytes=row.total_bytes,
            avg_duration_seconds=row.avg_duration,
            p50_duration_seconds=row.p50_duration,
            p95_duration_seconds=row.p95_duration,
            max_duration_seconds=row.max_duration,
            p50_throughput_bytes_per_second=row.p50_throughput,
            p95_throughput_bytes_per_second=row.p95_throughput,
            unique_engineers=row.unique_engineers,
            distinct_downloads=row.distinct_downloads,
        )


STATS_CURSOR = "STATS"


def stats_offset(after: str | None) -> int:
    if after is None:
        return 0
    offset = decode_cursor(after, STATS_CURSOR, 1)[0]
    return offset if isinstance(offset, int) else -1


@strawberry.type(description="A page of `downloadStats` rows, how many there are in all, and their source.")
class DownloadStatsResult:
    rows: list[DownloadStatsRow] = strawberry.field(description="This page's rows, in the requested order.")
    total_rows: int = strawberry.field(description="Rows (groups) in all; more than `rows` when it was cut.")
    page_info: PageInfo = strawberry.field(
        description="`hasNextPage` says rows were cut; pass `endCursor` as `after` for the next page."
    )
    source: StatsSource = strawberry.field(description="Where the answer was computed.")

    @classmethod
    def from_page(cls, page: StatsPage) -> DownloadStatsResult:
        info = PageInfo(
            has_next_page=page.has_more,
            has_previous_page=page.offset > 0,
            start_cursor=encode_cursor(STATS_CURSOR, [page.offset]) if page.rows else None,
            end_cursor=encode_cursor(STATS_CURSOR, [page.next_offset]) if page.rows else None,
        )
        return cls(
            rows=[DownloadStatsRow.from_row(r) for r in page.rows],
            total_rows=page.total,
            page_info=info,
            source=StatsSource(page.source.value),
        )


def stats_request(
    group_by: list[DownloadDimension],
    query: queries.EventQuery,
    interval: TimeInterval | None,
    time_zone: str | None,
    order_by: StatsOrder | None,
    limit: int,
    exact: bool,
    after: str | None,
) -> queries.StatsRequest:
    return queries.StatsRequest(
        query=query,
        group_by=[queries.Dimension(d.name) for d in group_by],
        interval=queries.Interval(interval.name) if interval else None,
        time_zone=time_zone,
        order_by=queries.StatsMetric(order_by.field.name) if order_by else None,
        descending=order_by is None or order_by.direction is OrderDirection.DESC,
        limit=limit,
        exact=exact,
        offset=stats_offset(after),
    )


@strawberry.enum(
    description="What `downloadSeries` plots: additive figures, so that an `other` series is exact."
)
class SeriesMetric(Enum):
    DOWNLOADS = strawberry.enum_value("DOWNLOADS", description="Download events of any status.")
    COMPLETED = strawberry.enum_value("COMPLETED", description="Completed downloads (the counting rule).")
    ABORTED = strawberry.enum_value("ABORTED", description="Aborted downloads.")
    FAILED = strawberry.enum_value("FAILED", description="Failed downloads.")
    TOTAL_BYTES = strawberry.enum_value("TOTAL_BYTES", description="Bytes sent.")


@strawberry.type(description="One bucket of a series.")
class SeriesPoint:
    period_start: datetime = strawberry.field(description="The bucket's start (UTC).")
    value: Long = strawberry.field(description="The metric in that bucket; 0 where nothing happened.")


@strawberry.type(description="One group's values over time, one point per bucket (zero-filled).")
class DownloadSeries:
    key: str | None = strawberry.field(
        description="The group's value as text (model name, version number, engineer, ...); null for `other`."
    )
    is_other: bool = strawberry.field(
        description="True for the series that sums every group not in the top N."
    )
    total: Long = strawberry.field(description="The metric over the whole range.")
    values: list[Long] = strawberry.field(description="The values alone, in the order of `buckets`.")
    points: list[SeriesPoint] = strawberry.field(description="Bucket starts with their values.")

    @classmethod
    def from_series(cls, found: series_uc.Series, starts: list[datetime]) -> DownloadSeries:
        key = found.key.value if isinstance(found.key, Enum) else found.key
        return cls(
            key=None if found.is_other or key is None else str(key),
            is_other=found.is_other,
            total=found.total,
            values=list(found.values),
            points=[SeriesPoint(period_start=t, value=v) for t, v in zip(starts, found.values, strict=True)],
        )


@strawberry.type(
    description="Series ready for a line or stacked-bar chart: the same buckets for every series, the top "
    "groups by the metric (largest first) and an `other` series when there are more groups."
)
class DownloadSeriesResult:
    buckets: list[datetime] = strawberry.field(
        description="Every bucket start from `since` to `until`; the first and last may be partial (they "
        "count only events inside the range)."
    )
    series: list[DownloadSeries] = strawberry.field(description="Top groups, then `other` if any.")
    totals: list[Long] = strawberry.field(description="All groups together, per bucket.")
    total: Long = strawberry.field(description="All groups together over the range.")
    groups: int = strawberry.field(description="Groups in all (the top ones and those inside `other`).")
    source: StatsSource = strawberry.field(description="Where the answer was computed.")

    @classmethod
    def from_result(cls, found: series_uc.SeriesResult) -> DownloadSeriesResult:
        return cls(
            buckets=found.buckets,
            series=[DownloadSeries.from_series(s, found.buckets) for s in found.series],
            totals=found.totals,
            total=sum(found.totals),
            groups=found.groups,
            source=StatsSource(found.source.value),
        )
