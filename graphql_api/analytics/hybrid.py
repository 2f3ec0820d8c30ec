"""Stats from the rollups: whole days from the daily buckets, whole hours from the hourly ones, and (for a
range that does not start and end on midnights, HYBRID) raw events only for the minutes at each edge,
merged into exact rows. A range of whole days (ROLLUP) is the case with days alone.

Counts, bytes, maxima and unique engineers equal the raw answer; percentiles come from the merged
histograms (within sqrt(HIST_RATIO), as for any rollup answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..db import events as events_db
from ..db import rollups as rollups_db
from ..queries import Interval, StatsRequest, day_of, hour_of, truncate
from .rollups import StoredOutcome, delta_of

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
Window = tuple[datetime | None, datetime | None]


@dataclass
class Pieces:
    """A range cut at hour and day edges: what each source answers."""

    days: list[Window] = field(default_factory=list)
    hours: list[Window] = field(default_factory=list)
    raw: list[Window] = field(default_factory=list)


def _ceil(moment: datetime, start_of: Any, step: timedelta) -> datetime:
    start: datetime = start_of(moment)
    return start if start == moment else start + step


def split(since: datetime | None, until: datetime | None) -> Pieces:
    """[since, until) as raw minutes, whole hours and whole days (an open end stays open on days)."""
    pieces = Pieces()
    if since is None:
        d1: datetime | None = None
        head: list[Window] = []
    else:
        h1, d1 = _ceil(since, hour_of, HOUR), _ceil(since, day_of, DAY)
        head = [(since, h1), (h1, d1)]
    if until is None:
        d2: datetime | None = None
        tail: list[Window] = []
    else:
        d2, h2 = day_of(until), hour_of(until)
        tail = [(d2, h2), (h2, until)]
    if d1 is not None and d2 is not None and d1 > d2:  # within one day: no whole day at all
        assert since is not None and until is not None
        h1, h2 = _ceil(since, hour_of, HOUR), hour_of(until)
        if h1 > h2:
            pieces.raw.append((since, until))
        else:
            pieces.raw += [(since, h1), (h2, until)]
            pieces.hours.append((h1, h2))
    else:
        pieces.days.append((d1, d2))
        if head:
            pieces.raw.append(head[0])
            pieces.hours.append(head[1])
        if tail:
            pieces.hours.append(tail[0])
            pieces.raw.append(tail[1])
    for windows in (pieces.raw, pieces.hours, pieces.days):
        windows[:] = [w for w in windows if _nonempty(w)]
    return pieces


def _nonempty(window: Window) -> bool:
    return window[0] is None or window[1] is None or window[0] < window[1]


def can_answer(req: StatsRequest) -> bool:
    """Whether the rollups can answer `req` once its range is cut at bucket edges (HOUR buckets: the hourly
    rollups answer the whole days too, so the range must be bounded)."""
    if req.interval is Interval.HOUR and (req.query.since is None or req.query.until is None):
        return False
    unbounded = dataclasses.replace(req, query=dataclasses.replace(req.query, since=None, until=None))
    return rollups_db.bucket_filter(unbounded, _days_grain(req)) is not None


def _days_grain(req: StatsRequest) -> rollups_db.Grain:
    """Which rollups answer the range's whole days: the daily ones, or the hourly ones for HOUR buckets."""
    return rollups_db.HOUR if req.interval is Interval.HOUR else rollups_db.DAY


async def closed_until(req: StatsRequest, present: datetime) -> datetime | None:
    """Where the range may end for cutting it into buckets: `until` itself, or the end of the bucket that
    holds it when that bucket holds nothing from `until` on.

    A dashboard's range ends now. Nothing has started after now, so the current day's (or, for HOUR
    buckets, hour's) bucket equals the range's last partial day: one bucket read instead of the day's
    hourly buckets and a raw edge. This is checked, not assumed (a writer's clock may run ahead): one
    indexed probe for any event in [until, end of its bucket), made only when `until` is in the present
    hour, so the probe's range is short. An event recorded between the probe and the bucket read is
    counted, as if the range had been read a moment later."""
    until = req.query.until
    if until is None:
        return None
    start_of, step = (hour_of, HOUR) if req.interval is Interval.HOUR else (day_of, DAY)
    start = start_of(until)
    if start == until or until < hour_of(present):
        return until
    end = start + step
    return until if await events_db.any_started(until, end) else end


async def hybrid_groups(req: StatsRequest, pending: rollups_db.Pending = ()) -> list[rollups_db.Group]:
    """Every group's merged row (unordered) for `req`, from days, hours and raw minutes; `pending`: the
    stages the roller may not have folded yet, added to the days and hours that do not hold them.

    The pieces are read concurrently (the database works on one while the app decodes another) and merged
    in a fixed order, so float sums come out the same every time."""
    pieces = split(req.query.since, await closed_until(req, datetime.now(UTC)))
    reads: list[Awaitable[list[rollups_db.Group]]] = []
    for grain, windows in ((_days_grain(req), pieces.days), (rollups_db.HOUR, pieces.hours)):
        reads += [_buckets(req, grain, since, until, pending) for since, until in windows]
    reads += [_edge(req, since, until) for since, until in pieces.raw]
    groups: dict[tuple[Any, ...], rollups_db.Group] = {}
    for part in await asyncio.gather(*reads):
        for key, delta in part:  # each delta is read once, so a group's first may become its total
            rollups_db.add_to(groups, key, delta)
    return await with_bitmaps(list(groups.values()))


async def with_bitmaps(groups: list[rollups_db.Group]) -> list[rollups_db.Group]:
    """Merged groups, in their order, with the engineers met in raw edges numbered (once, together) and
    folded into each total's bitmaps, so that every row's engineers (and pairs) are one bitmap."""
    numbers = await rollups_db.engineer_numbers(set().union(*(t.engineers for _, t in groups)))
    for _, total in groups:
        total.engineer_bits, total.pair_bits = total.bitmap(numbers), total.pair_bitmaps(numbers)
        total.engineers, total.pairs = set(), set()
    return groups


async def _buckets(
    req: StatsRequest,
    grain: rollups_db.Grain,
    since: datetime | None,
    until: datetime | None,
    pending: rollups_db.Pending,
) -> list[rollups_db.Group]:
    """One piece of whole buckets: its groups and what each adds (its pending stages included)."""
    piece = dataclasses.replace(req, query=dataclasses.replace(req.query, since=since, until=until))
    found = await rollups_db.grouped(piece, grain, pending)
    assert found is not None, "bucket edges always translate"
    return found


async def _edge(req: StatsRequest, since: datetime | None, until: datetime | None) -> list[rollups_db.Group]:
    """One raw edge: each event's group and what it adds, by the write path's own rule (so edges and
    buckets agree). Events are read as plain documents: building a DownloadEvent for each cost a third of
    the edge's time; the read is a raw scan's piece (a slot, the deadline), as the pieces of RAW answers."""
    edge = dataclasses.replace(req.query, since=since, until=until)
    fields = [(d.value, events_db.DIMENSIONS[d]) for d in req.group_by]
    out = []
    for doc in await events_db.edge_documents(edge):
        key: dict[str, Any] = {name: doc.get(field) for name, field in fields}
        if req.interval:
            key["period"] = truncate(doc["started_at"].astimezone(UTC), req.interval)
        out.append((key, delta_of(StoredOutcome.of(doc), started=True, finished=True)))
    return out
