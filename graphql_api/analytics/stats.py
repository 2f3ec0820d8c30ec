"""`downloadStats`: rows from the rollups where they answer exactly (with raw events at the edges of a range
off bucket edges), else from raw events."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import figures
from ..db import events as events_db
from ..db import rollups as rollups_db
from ..db.rollups import RollupDelta
from ..documents import ClientKind, DownloadMode, DownloadStatus
from ..errors import RangeBeyondRetention
from ..figures import Finish
from ..queries import MAX_STATS_LIMIT, METRIC_FIELDS, Dimension, StatsRequest, StatsSource, hour_of
from ..scope import Scope
from . import hybrid, rollups
from .histograms import HIST_MIN, THROUGHPUT_MIN, histogram_percentile


@dataclass
class StatsRow:
    model_name: str | None = None
    model_version: int | None = None
    project_name: str | None = None
    engineer: str | None = None
    mode: DownloadMode | None = None
    status: DownloadStatus | None = None
    client_kind: ClientKind | None = None
    client_version: str | None = None
    requested_alias: str | None = None
    period_start: datetime | None = None
    downloads: int = 0
    completed: int = 0
    aborted: int = 0
    failed: int = 0
    verified: int = 0
    mismatched: int = 0
    total_bytes: int = 0
    avg_duration: float | None = None
    p50_duration: float | None = None
    p95_duration: float | None = None
    p99_duration: float | None = None
    max_duration: float | None = None
    p50_throughput: float | None = None
    p95_throughput: float | None = None
    unique_engineers: int = 0
    distinct_downloads: int = 0
    source: StatsSource = StatsSource.RAW


# Dimension → the StatsRow attribute holding its value (figures.DIMENSIONS).
ROW_FIELDS: dict[Dimension, str] = {Dimension(d.name): d.row for d in figures.DIMENSIONS}


def _check() -> None:
    """StatsRow against figures.DIMENSIONS and figures.FIGURES (at import: at start)."""
    want: list[tuple[str, Any]] = [(d.row, None) for d in figures.DIMENSIONS] + [("period_start", None)]
    want += [(f.name, 0 if f.integral else None) for f in figures.FIGURES] + [("source", StatsSource.RAW)]
    have = [(f.name, f.default) for f in dataclasses.fields(StatsRow)]
    figures.require_names([n for n, _ in have], [n for n, _ in want], "StatsRow")
    figures.require(have == want, f"StatsRow's defaults must be {want}")
    for f in figures.FIGURES:
        low = f.rollup.minimum if f.rollup is not None else None
        figures.require(low in (None, THROUGHPUT_MIN), f"figure {f.name}: a histogram with no bucketing")


_check()


def _group(key: dict[str, Any] | None) -> dict[str, Any]:
    """A group key (Dimension name → stored value) as StatsRow attributes, enums read back."""
    key = key or {}
    group: dict[str, Any] = {}
    for d in figures.DIMENSIONS:
        value = key.get(d.name)
        group[d.row] = d.kind(value) if d.kind is not None and value is not None else value
    return group


def _row(doc: dict[str, Any]) -> StatsRow:
    """A raw row (`db/events/raw_stats.py`: `_id` the group key, every figure under its name)."""
    figured = {f.name: doc[f.name] for f in figures.FIGURES}
    return StatsRow(**_group(doc["_id"]), period_start=doc.get("period_start"), **figured)


def _rollup_figure(made: figures.Made, total: RollupDelta) -> Any:
    """One figure of a rollup row, as figures.FIGURES says it is made from the merged buckets."""
    values = [getattr(total, name) for name in made.of]
    if made.finish is Finish.VALUE:
        return values[0]
    if made.finish is Finish.MEAN:
        return values[0] / values[1] if values[1] else None
    if made.finish is Finish.PERCENTILE:
        return histogram_percentile(values[0], made.p, made.minimum or HIST_MIN)
    if made.finish is Finish.BITS:
        return int(values[0]).bit_count()
    if made.finish is Finish.PAIR_BITS:
        return sum(int(bits).bit_count() for bits in values[0].values())
    raise figures.FigureMismatch(f"rollups cannot finish {made.finish}")


def _rollup_row(group: rollups_db.Group, source: StatsSource) -> StatsRow:
    """A merged rollup group (its engineers folded into bitmaps: hybrid.with_bitmaps) as a row."""
    key, total = group
    figured = {f.name: _rollup_figure(f.rollup, total) for f in figures.FIGURES if f.rollup is not None}
    return StatsRow(**_group(key), period_start=key.get("period"), **figured, source=source)


def page_rows(groups: list[rollups_db.Group], req: StatsRequest, source: StatsSource) -> list[StatsRow]:
    """`order_rows` of the groups' rows, with every figure made only for the page's rows: the others are
    ordered by the one figure the order reads (an HOUR range holds a row per group and hour, tens of
    thousands, of which a page keeps at most MAX_STATS_LIMIT)."""
    name = METRIC_FIELDS[req.sort_metric]
    made = next((f.rollup for f in figures.FIGURES if f.name == name), None)
    ordering: list[StatsRow] = []
    for key, total in groups:
        figure = {name: _rollup_figure(made, total)} if made is not None else {}
        ordering.append(StatsRow(**_group(key), period_start=key.get("period"), **figure, source=source))
    group_of = {id(row): group for row, group in zip(ordering, groups, strict=True)}
    return [_rollup_row(group_of[id(row)], source) for row in order_rows(ordering, req)]


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)


@dataclass
class StatsPage:
    """One page of stats rows, how many rows there are in all, and where they came from."""

    rows: list[StatsRow]
    total: int
    source: StatsSource
    offset: int = 0

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.rows)

    @property
    def has_more(self) -> bool:
        return self.next_offset < self.total


def order_rows(rows: list[StatsRow], req: StatsRequest) -> list[StatsRow]:
    """Mongo's order, in Python: by the metric (nulls lowest), ties by the group key ascending; one page."""
    name = METRIC_FIELDS[req.sort_metric]

    def tie_break(r: StatsRow) -> tuple[Any, ...]:
        key = tuple(_sortable(getattr(r, ROW_FIELDS[d])) for d in req.group_by)
        return (*key, _sortable(r.period_start)) if req.interval else key

    rows = sorted(rows, key=tie_break)
    rows.sort(key=lambda r: _sortable(getattr(r, name)), reverse=req.descending)
    return rows[req.offset : req.offset + req.limit]


# A ROLLUP range longer than this (or unbounded) is grouped, ordered and cut by the database when its order
# allows (rollups_db.page_in_db), so a top-N over all time ships its rows, not every bucket; shorter ranges
# (every dashboard's) are grouped in the app, which SecantusDB answers faster.
LONG_RANGE = timedelta(days=62)


def is_long(req: StatsRequest, now: datetime) -> bool:
    since, until = req.query.since, req.query.until or now
    return since is None or until - since > LONG_RANGE


def source_for(req: StatsRequest) -> StatsSource:
    """Where `download_stats` answers `req` from: the rollup translation decides, in this one place. A
    dimension or filter the rollups do not keep (ENGINEER, STATUS, ALIAS, ...) is not in their translation
    tables (rollups_db.DIMENSIONS, rollups_db.filters), so such a request is answered from raw events."""
    if not figures.ROLLUPS_ANSWER:
        return StatsSource.RAW
    if rollups_db.bucket_filter(req) is not None:
        return StatsSource.ROLLUP
    return StatsSource.HYBRID if hybrid.can_answer(req) else StatsSource.RAW


def retention_horizon(retention_days: int | None, now: datetime | None = None) -> datetime | None:
    """The oldest moment raw events are kept from (MODELHUB_EVENT_RETENTION_DAYS), or None: keep all."""
    if retention_days is None:
        return None
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)


def within_retention(req: StatsRequest, source: StatsSource, horizon: datetime | None) -> StatsRequest:
    """`req` as it may be answered once raw events older than `horizon` may be gone, by a rule that depends
    on the horizon alone (never on what has expired yet), so a range answers the same before and after
    its events expire:

    - ROLLUP: whole days from the rollups, which keep the figures forever; unchanged.
    - HYBRID: an end of the range older than the horizon is widened to its whole UTC hour (`since` back
      to the hour's start, `until` on to its end), so the part past the horizon is read from hourly
      buckets and no raw edge lies beyond it.
    - RAW (exact, ENGINEER or STATUS groupings and filters, non-UTC buckets, byte filters): only kept
      events answer. An open start means the horizon; a `since` or `until` before it is refused with
      RANGE_BEYOND_RETENTION rather than answered from whatever has not expired yet."""
    if horizon is None or source is StatsSource.ROLLUP:
        return req
    since, until = req.query.since, req.query.until
    if source is StatsSource.HYBRID:
        if since is not None and since < horizon:
            since = hour_of(since)
        if until is not None and until < horizon and hour_of(until) != until:
            until = hour_of(until) + timedelta(hours=1)
    else:
        label = horizon.isoformat(timespec="seconds")
        if since is not None and since < horizon:
            raise RangeBeyondRetention("filter.since", label)
        if until is not None and until <= horizon:
            raise RangeBeyondRetention("filter.until", label)
        since = since or horizon
    if (since, until) == (req.query.since, req.query.until):
        return req
    return dataclasses.replace(req, query=dataclasses.replace(req.query, since=since, until=until))


async def download_stats(
    scope: Scope,
    req: StatsRequest,
    max_hour_range_days: int = 31,
    max_limit: int = MAX_STATS_LIMIT,
    horizon: datetime | None = None,
) -> StatsPage:
    """`downloadStats`: from rollups when they can answer exactly (counts, bytes), from rollups and the raw
    edges for a range off midnights, else from raw events. `max_limit` is for callers inside the server
    (`downloadSeries` reads every row of its range at once); `horizon` is where raw events may have expired
    (see `within_retention`)."""
    req.validate(max_hour_range_days, max_limit)
    narrowed = scope.events(req.query)
    source = source_for(req)
    if narrowed is None:  # nothing visible: no rows, and no grand total either
        return StatsPage([], 0, source, req.offset)
    req = dataclasses.replace(req, query=narrowed)
    source = source_for(req)
    req = within_retention(req, source, horizon)
    if source is StatsSource.RAW:
        first = None if req.query.since is not None else await rollups_db.first_day()
        docs = await events_db.stats(req, first)
        rows = [_row(d) for d in docs]
        return StatsPage(order_rows(rows, req), len(rows), source, req.offset)
    pending = await rollups.pending()
    if source is StatsSource.ROLLUP and is_long(req, datetime.now(UTC)):
        found = await rollups_db.page_in_db(req, pending=pending)
        if found is not None:
            groups, total = found
            rows = [_rollup_row(g, source) for g in await hybrid.with_bitmaps(groups)]
            return StatsPage(rows, total, source, req.offset)
    # Rollup rows are grouped and ordered here (see rollups_db.grouped); a ROLLUP answer is a HYBRID one
    # whose range holds whole days only.
    groups = await hybrid.hybrid_groups(req, pending)
    return StatsPage(page_rows(groups, req, source), len(groups), source, req.offset)
