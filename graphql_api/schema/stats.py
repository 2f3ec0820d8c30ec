"""Strawberry types and inputs of `downloadStats`."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from .. import documents, figures, queries
from ..analytics import series as series_uc
from ..analytics.stats import StatsPage, StatsRow
from ..pagination import decode_cursor, encode_cursor
from .connections import PageInfo
from .downloads import ClientKind, DownloadMode, DownloadStatus
from .scalars import Long
from .types import OrderDirection


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
    P99_DURATION = strawberry.enum_value("P99_DURATION", description="99th percentile duration.")
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


def _figure(name: str) -> Any:
    return strawberry.field(description=figures.FIGURE[name].description)


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
    # The figures: names and descriptions from figures.FIGURES (checked below).
    downloads: int = _figure("downloads")
    completed: int = _figure("completed")
    aborted: int = _figure("aborted")
    failed: int = _figure("failed")
    verified: int = _figure("verified")
    mismatched: int = _figure("mismatched")
    total_bytes: Long = _figure("total_bytes")
    avg_duration_seconds: float | None = _figure("avg_duration")
    p50_duration_seconds: float | None = _figure("p50_duration")
    p95_duration_seconds: float | None = _figure("p95_duration")
    p99_duration_seconds: float | None = _figure("p99_duration")
    max_duration_seconds: float | None = _figure("max_duration")
    p50_throughput_bytes_per_second: float | None = _figure("p50_throughput")
    p95_throughput_bytes_per_second: float | None = _figure("p95_throughput")
    unique_engineers: int = _figure("unique_engineers")
    distinct_downloads: int = _figure("distinct_downloads")

    @classmethod
    def from_row(cls, row: StatsRow) -> DownloadStatsRow:
        """The row as it is, under the GraphQL fields' names (figures.DIMENSIONS, figures.FIGURES)."""
        group = {d.field: _out(getattr(row, d.row)) for d in figures.DIMENSIONS}
        figured = {f.field: getattr(row, f.name) for f in figures.FIGURES}
        return cls(**group, period_start=row.period_start, **figured)


def _check() -> None:
    """The row type and the enums against figures.DIMENSIONS and figures.FIGURES (at import: at start)."""
    names = [d.field for d in figures.DIMENSIONS] + ["period_start"] + [f.field for f in figures.FIGURES]
    figures.require_names(list(DownloadStatsRow.__annotations__), names, "schema DownloadStatsRow")
    figures.require_names([m.name for m in StatsMetric], list(figures.METRIC_NAMES), "schema StatsMetric")
    figures.require_names([m.name for m in SeriesMetric], list(figures.SERIES_NAMES), "schema SeriesMetric")
    figures.require_names([m.name for m in DownloadDimension], list(figures.DIMENSION), "DownloadDimension")
    for d in figures.DIMENSIONS:
        figures.require(d.kind is None or d.kind in _ENUMS, f"dimension {d.name}: no GraphQL enum")


_ENUMS: dict[type[Enum], type[Enum]] = {
    documents.DownloadMode: DownloadMode,
    documents.DownloadStatus: DownloadStatus,
    documents.ClientKind: ClientKind,
}


def _out(value: Any) -> Any:
    """A group's value for GraphQL: a stored enum as its GraphQL enum."""
    return _ENUMS[type(value)](value.value) if isinstance(value, Enum) else value


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


_check()
