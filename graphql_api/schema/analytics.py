"""The root fields of download analytics: `downloadStats` (grouped rows) and `downloadSeries` (charts)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from ..analytics import series, stats
from .context import Info
from .downloads import DownloadFilter
from .stats import (
    DownloadDimension,
    DownloadSeriesResult,
    DownloadStatsResult,
    SeriesMetric,
    StatsOrder,
    TimeInterval,
    stats_request,
)

TIME_ZONE = strawberry.argument(description="IANA zone for the buckets, e.g. Europe/Paris.")


@strawberry.type
class AnalyticsQueries:
    @strawberry.field(
        description="Download figures grouped by any dimensions and time buckets, ordered by any metric, a "
        "page of `limit` (1..1000, default 100) rows at a time. An empty `groupBy` gives one grand-total row."
    )
    async def download_stats(
        self,
        info: Info,
        group_by: Annotated[
            list[DownloadDimension], strawberry.argument(description="Dimensions to group by.")
        ],
        filter: Annotated[
            DownloadFilter | None, strawberry.argument(description="Which events count.")
        ] = None,
        interval: Annotated[
            TimeInterval | None, strawberry.argument(description="Time buckets, if any.")
        ] = None,
        time_zone: Annotated[str | None, TIME_ZONE] = None,
        order_by: Annotated[
            StatsOrder | None, strawberry.argument(description="Default: DOWNLOADS DESC.")
        ] = None,
        limit: Annotated[int, strawberry.argument(description="Rows per page: 1..1000.")] = 100,
        after: Annotated[
            str | None, strawberry.argument(description="`pageInfo.endCursor` of the last page.")
        ] = None,
        exact: Annotated[
            bool, strawberry.argument(description="Compute from raw events even where rollups could answer.")
        ] = False,
    ) -> DownloadStatsResult:
        query = (filter or DownloadFilter()).to_query()
        request = stats_request(group_by, query, interval, time_zone, order_by, limit, exact, after)
        ctx = info.context
        settings = ctx.services.settings
        horizon = stats.retention_horizon(settings.event_retention_days)
        page = await stats.download_stats(ctx.scope, request, settings.max_hour_range_days, horizon=horizon)
        return DownloadStatsResult.from_page(page)

    @strawberry.field(
        description="Chart-ready download series over [since, until): one series per group of `by` with a "
        "point per `interval` bucket (zero-filled), the `top` groups by `metric` largest first, and an "
        "`other` series summing the rest. Counts follow the same rules as `downloadStats`."
    )
    async def download_series(
        self,
        info: Info,
        by: Annotated[
            DownloadDimension, strawberry.argument(description="The dimension that splits series.")
        ],
        since: Annotated[datetime, strawberry.argument(description="Start of the range (inclusive).")],
        until: Annotated[datetime, strawberry.argument(description="End of the range (exclusive).")],
        interval: Annotated[
            TimeInterval, strawberry.argument(description="The bucket size.")
        ] = TimeInterval.DAY,
        metric: Annotated[
            SeriesMetric, strawberry.argument(description="What to plot.")
        ] = SeriesMetric.COMPLETED,
        filter: Annotated[
            DownloadFilter | None,
            strawberry.argument(description="Which events count (its since/until must be unset)."),
        ] = None,
        top: Annotated[int, strawberry.argument(description="How many groups get a series: 1..50.")] = 10,
        time_zone: Annotated[str | None, TIME_ZONE] = None,
    ) -> DownloadSeriesResult:
        request = series.SeriesRequest(
            by=by,
            metric=metric,
            interval=interval,
            since=since,
            until=until,
            query=(filter or DownloadFilter()).to_query(),
            top=top,
            time_zone=time_zone,
        )
        ctx = info.context
        settings = ctx.services.settings
        horizon = stats.retention_horizon(settings.event_retention_days)
        found = await series.download_series(
            ctx.scope, request, settings.max_hour_range_days, horizon=horizon
        )
        return DownloadSeriesResult.from_result(found)
