"""`downloadSeries`: chart-ready time series, one per group, zero-filled, the top N groups and "other".

Three stats queries, each bounded by what the chart shows rather than by the data: the top N groups by the
metric over the whole range (and how many groups there are), the buckets of just those N groups, and the
buckets of everything; "other" is everything minus the top N, bucket by bucket. That is exact because the
metrics offered are additive (counts and bytes); distinct counts and percentiles are not, so they are not
offered here (`downloadStats` has them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from .. import figures
from ..errors import InvalidInput
from ..queries import (
    METRIC_FIELDS,
    Dimension,
    EventQuery,
    Interval,
    StatsMetric,
    StatsRequest,
    StatsSource,
    check_time_zone,
)
from ..scope import Scope
from .stats import ROW_FIELDS, StatsRow, download_stats

MAX_TOP = 50
MAX_POINTS = 1000
OTHER = "other"


class SeriesMetric(StrEnum):
    DOWNLOADS = "DOWNLOADS"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAILED = "FAILED"
    TOTAL_BYTES = "TOTAL_BYTES"


figures.require_names([m.value for m in SeriesMetric], list(figures.SERIES_NAMES), "analytics SeriesMetric")

# Where a dimension's chosen values go in an EventQuery, to fetch only the top groups' buckets.
_FILTER_FIELDS: dict[Dimension, str] = {Dimension(d.name): d.filter for d in figures.DIMENSIONS if d.filter}


@dataclass(frozen=True)
class SeriesRequest:
    by: Dimension
    metric: SeriesMetric
    interval: Interval
    since: datetime
    until: datetime
    query: EventQuery
    top: int = 10
    time_zone: str | None = None

    def validate(self) -> None:
        if self.query.since is not None or self.query.until is not None:
            field = "filter.since" if self.query.since is not None else "filter.until"
            raise InvalidInput(field, "downloadSeries takes its range from its own since/until")
        if self.since >= self.until:
            raise InvalidInput("since", "must be earlier than until")
        if not 1 <= self.top <= MAX_TOP:
            raise InvalidInput("top", f"must be between 1 and {MAX_TOP}, got {self.top}")
        check_time_zone(self.time_zone)
        if self.by not in _FILTER_FIELDS:
            raise InvalidInput("by", f"{self.by.value} has no filter, so it cannot split a series")


@dataclass
class Series:
    key: Any  # the group's value (None for "other" and for events without one)
    is_other: bool
    values: list[int]

    @property
    def total(self) -> int:
        return sum(self.values)


@dataclass
class SeriesResult:
    buckets: list[datetime]
    series: list[Series]
    totals: list[int]
    groups: int  # how many groups there are in all (the top ones plus those summed in "other")
    source: StatsSource


def buckets(since: datetime, until: datetime, interval: Interval, time_zone: str | None) -> list[datetime]:
    """The starts (UTC) of every bucket that [since, until) touches, as $dateTrunc computes them in the zone
    (weeks start on Monday); the first and last may be partial."""
    zone = ZoneInfo(time_zone or "UTC")
    local = since.astimezone(zone)
    if interval is Interval.HOUR:
        # A zone's hours are one UTC hour apart (at :30 with a half-hour offset, as $dateTrunc has it).
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        out = []
        while start < until:
            out.append(start)
            start += timedelta(hours=1)
            if len(out) > MAX_POINTS:
                break
        return out
    day = local.date()
    if interval is Interval.WEEK:
        day -= timedelta(days=day.weekday())
    elif interval is Interval.MONTH:
        day = day.replace(day=1)
    out = []
    while (start := datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)) < until:
        out.append(start)
        if len(out) > MAX_POINTS:
            break
        if interval is Interval.DAY:
            day += timedelta(days=1)
        elif interval is Interval.WEEK:
            day += timedelta(days=7)
        else:
            day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def download_series(
    scope: Scope, req: SeriesRequest, max_hour_range_days: int = 31, horizon: datetime | None = None
) -> SeriesResult:
    """The top `req.top` groups' series, an "other" series when more groups exist, and the totals."""
    req.validate()
    starts = buckets(req.since, req.until, req.interval, req.time_zone)
    if len(starts) > MAX_POINTS:
        raise InvalidInput("interval", f"the range has more than {MAX_POINTS} buckets; use a longer interval")
    metric = StatsMetric(req.metric.value)
    value_of = METRIC_FIELDS[metric]
    query = dataclasses.replace(req.query, since=req.since, until=req.until)
    base = StatsRequest(query=query, group_by=[req.by], time_zone=req.time_zone, order_by=metric)

    ranked = await download_stats(
        scope, dataclasses.replace(base, limit=req.top), max_hour_range_days, horizon=horizon
    )
    keys = [getattr(row, ROW_FIELDS[req.by]) for row in ranked.rows]
    index = {start: i for i, start in enumerate(starts)}

    def bucketed(rows: list[StatsRow]) -> dict[Any, list[int]]:
        out: dict[Any, list[int]] = {}
        for row in rows:
            assert row.period_start is not None
            values = out.setdefault(getattr(row, ROW_FIELDS[req.by]), [0] * len(starts))
            values[index[_utc(row.period_start)]] += getattr(row, value_of)
        return out

    sources = [ranked.source]
    series: list[Series] = []
    if keys:
        only_top = dataclasses.replace(query)
        setattr(only_top, _FILTER_FIELDS[req.by], keys)
        per_group = dataclasses.replace(
            base, query=only_top, interval=req.interval, limit=len(keys) * len(starts)
        )
        page = await download_stats(
            scope, per_group, max_hour_range_days, max_limit=per_group.limit, horizon=horizon
        )
        sources.append(page.source)
        found = bucketed(page.rows)
        series = [Series(key, False, found.get(key, [0] * len(starts))) for key in keys]
    everything = dataclasses.replace(base, group_by=[], interval=req.interval, limit=len(starts))
    page = await download_stats(
        scope, everything, max_hour_range_days, max_limit=everything.limit, horizon=horizon
    )
    sources.append(page.source)
    totals = bucketed(page.rows).get(None, [0] * len(starts))
    if ranked.total > len(keys):
        other = [total - sum(s.values[i] for s in series) for i, total in enumerate(totals)]
        series.append(Series(None, True, other))
    source = next(s for s in (StatsSource.RAW, StatsSource.HYBRID, StatsSource.ROLLUP) if s in sources)
    return SeriesResult(starts, series, totals, ranked.total, source)
