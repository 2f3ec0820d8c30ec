"""Strawberry types and inputs of `downloadStats`."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types.enum import has_enum_definition

from .. import figures, queries
from ..analytics import series as series_uc
from ..analytics.stats import StatsPage, StatsRow
from ..pagination import decode_cursor, encode_cursor
from .connections import PageInfo
from .downloads import ClientKind, DownloadMode, DownloadStatus
from .enums import graphql_enum
from .scalars import Long
from .types import OrderDirection

DownloadDimension = queries.Dimension
graphql_enum(
    DownloadDimension,
    "What `downloadStats` can group by.",
    name="DownloadDimension",
    MODEL="The model name.",
    VERSION="The version number (group by MODEL too).",
    PROJECT="The project.",
    ENGINEER="Who downloaded (raw events only).",
    MODE="STREAM or PRESIGNED.",
    STATUS="The download's status (raw events only).",
    CLIENT_KIND="CI, BOT, HUMAN or UNKNOWN.",
    CLIENT_VERSION="The SDK release (null: not the SDK) (raw events only).",
    ALIAS="The alias the download asked for (`requestedAlias`; null when it asked by number or for the "
    "latest; raw events only). With VERSION: who still pulls what an alias used to point at.",
)


TimeInterval = queries.Interval
graphql_enum(
    TimeInterval,
    "Time buckets (UTC unless `timeZone` says otherwise); weeks start on Monday.",
    name="TimeInterval",
    HOUR="Hours (from the hourly rollups and raw edges; a range of at most 31 days).",
    DAY="Days.",
    WEEK="Weeks from Monday.",
    MONTH="Calendar months.",
)


StatsMetric = queries.StatsMetric
graphql_enum(
    StatsMetric,
    "What `downloadStats` rows can be ordered by.",
    PERIOD_START="The bucket's start (needs an interval).",
    DOWNLOADS="Download events of any status.",
    COMPLETED="Completed downloads.",
    ABORTED="Aborted downloads.",
    FAILED="Failed downloads.",
    TOTAL_BYTES="Bytes sent.",
    AVG_DURATION="Mean duration.",
    P50_DURATION="Median duration.",
    P95_DURATION="95th percentile duration.",
    P99_DURATION="99th percentile duration.",
    MAX_DURATION="Longest duration.",
    UNIQUE_ENGINEERS="Distinct engineers.",
    DISTINCT_DOWNLOADS="Distinct (engineer, model version) pairs.",
)


StatsSource = queries.StatsSource
graphql_enum(
    StatsSource,
    "Where `downloadStats` computed its answer.",
    RAW="From raw events: exact, slower on long ranges.",
    ROLLUP="From daily rollups: exact counts and bytes; percentiles within about 5% (pass `exact: true` for "
    "raw percentiles).",
    HYBRID="A range off midnights: whole days and hours from rollups, raw events for the minutes at each "
    "edge; exact like ROLLUP.",
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
        group = {d.field: getattr(row, d.row) for d in figures.DIMENSIONS}
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
        figures.require(d.kind is None or has_enum_definition(d.kind), f"dimension {d.name}: no GraphQL enum")


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
            source=page.source,
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
        group_by=list(group_by),
        interval=interval,
        time_zone=time_zone,
        order_by=order_by.field if order_by else None,
        descending=order_by is None or order_by.direction is OrderDirection.DESC,
        limit=limit,
        exact=exact,
        offset=stats_offset(after),
    )


SeriesMetric = series_uc.SeriesMetric
graphql_enum(
    SeriesMetric,
    "What `downloadSeries` plots: additive figures, so that an `other` series is exact.",
    DOWNLOADS="Download events of any status.",
    COMPLETED="Completed downloads (the counting rule).",
    ABORTED="Aborted downloads.",
    FAILED="Failed downloads.",
    TOTAL_BYTES="Bytes sent.",
)


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
            source=found.source,
        )


_check()
