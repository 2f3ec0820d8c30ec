"""The raw stats scan of `download_events`: figures grouped by the database in pieces, merged here."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any

from ... import figures
from ...documents import DownloadEvent, utcnow
from ...figures import FigureMismatch, Finish, Merge
from ...limits import piece_seconds
from ...queries import StatsRequest
from .. import work
from ..common import Condition, merge_filters, ordered_page, time_window, trunc
from .filters import DIMENSIONS, event_filter

# The first grouping, per (group, engineer), so unique engineers are a count of sub-groups (`$addToSet`
# over a large group was some 8x slower on SecantusDB): every partial of figures.PARTIALS.
_PER_ENGINEER: Condition = {p.name: p.accumulator for p in figures.PARTIALS}
_SPREAD = (Merge.SUM, Merge.MAX, Merge.CONCAT)  # partials the second grouping merges as they are


def _per_group() -> Condition:
    """The second grouping: the engineers' partials merged, and the figures only a whole group makes."""
    merge = {Merge.SUM: "$sum", Merge.MAX: "$max", Merge.CONCAT: "$push"}
    out: Condition = {p.name: {merge[p.merge]: f"${p.name}"} for p in figures.PARTIALS if p.merge in _SPREAD}
    for f in figures.FIGURES:
        if f.raw.finish is Finish.GROUPS:
            out[f.name] = {"$sum": 1}
        elif f.raw.finish is Finish.SIZE:
            out[f.name] = {"$sum": {"$size": f"${f.raw.of[0]}"}}
    return out


def _concatenated(name: str) -> Condition:
    return {
        "$reduce": {"input": f"${name}", "initialValue": [], "in": {"$concatArrays": ["$$value", "$$this"]}}
    }


def _finished(figure: figures.Figure) -> Any:
    """The row projection's expression of a figure, from the second grouping's fields."""
    made = figure.raw
    if made.finish is Finish.VALUE:
        return 1 if made.of[0] == figure.name else f"${made.of[0]}"
    if made.finish is Finish.MEAN:
        total, count = made.of
        return {"$cond": [{"$gt": [f"${count}", 0]}, {"$divide": [f"${total}", f"${count}"]}, None]}
    if made.finish is Finish.PERCENTILE:  # picked from the list's percentiles (_PERCENTILES)
        ps = _percentiles_of(made.of[0])
        return {"$arrayElemAt": [f"$_p_{made.of[0]}", ps.index(made.p)]}
    return f"${figure.name}"  # GROUPS, SIZE: made by the second grouping


def _percentiles_of(partial: str) -> list[float]:
    """Every percentile the figures read of one listed partial, in declaration order."""
    found = [f.raw.p for f in figures.FIGURES if f.raw.finish is Finish.PERCENTILE and f.raw.of[0] == partial]
    return list(dict.fromkeys(found))


_PER_GROUP = _per_group()
# Each listed partial's percentiles in one `$percentile` (the lists are concatenated once), as `_p_<name>`.
_LISTED = list(dict.fromkeys(f.raw.of[0] for f in figures.FIGURES if f.raw.finish is Finish.PERCENTILE))
_PERCENTILES: Condition = {
    f"_p_{name}": {
        "$percentile": {"input": _concatenated(name), "p": _percentiles_of(name), "method": "approximate"}
    }
    for name in _LISTED
}
_ROW: Condition = {**{f.name: _finished(f) for f in figures.FIGURES}, "period_start": "$_id.period"}


def stats_pipeline(req: StatsRequest) -> list[Condition]:
    """The whole aggregation over raw events in one pipeline, percentiles included (bench/analytics.py
    compares it; the app runs `stats`, the same figures in bounded pieces)."""
    key: Condition = {d.value: f"${DIMENSIONS[d]}" for d in req.group_by}
    if req.interval:
        key["period"] = trunc("$started_at", req.interval, req.tz)
    return [
        {"$match": event_filter(req.query)},
        {"$group": {"_id": {"k": key, "engineer": "$engineer"}, **_PER_ENGINEER}},
        {"$group": {"_id": "$_id.k", **_PER_GROUP}},
        {"$addFields": _PERCENTILES},
        {"$project": _ROW},
        *ordered_page(req),
    ]


def _piece_pipeline(req: StatsRequest, window: Condition) -> list[Condition]:
    """The first grouping of `stats_pipeline` over one time window: partial figures per (group, engineer)."""
    key: Condition = {d.value: f"${DIMENSIONS[d]}" for d in req.group_by}
    if req.interval:
        key["period"] = trunc("$started_at", req.interval, req.tz)
    return [
        {"$match": merge_filters(event_filter(req.query), window)},
        {"$group": {"_id": {"k": key, "engineer": "$engineer"}, **_PER_ENGINEER}},
    ]


# The first piece of a scan covers this much time; each next one is sized from how long the last one took.
FIRST_PIECE = timedelta(hours=6)
MIN_PIECE = timedelta(minutes=1)


def _hashable(value: Any) -> Any:
    """A UNION partial's member as a set element (documents become sorted item tuples)."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def _merge_partial(into: dict[tuple[Any, ...], dict[str, Any]], doc: dict[str, Any]) -> None:
    """Adds one piece's partial figures of a (group, engineer) to those of earlier pieces."""
    k = doc["_id"].get("k") or {}
    key = (tuple(sorted(k.items())), doc["_id"].get("engineer"))
    have = into.get(key)
    if have is None:
        into[key] = have = {"k": k}
        for p in figures.PARTIALS:
            value = doc[p.name]
            have[p.name] = {_hashable(v) for v in value} if p.merge is Merge.UNION else value
        return
    for p in figures.PARTIALS:
        have[p.name] = _merged(p.merge, have[p.name], doc[p.name])


def _merged(merge: Merge, have: Any, value: Any) -> Any:
    if merge is Merge.SUM:
        return have + value
    if merge is Merge.MAX:
        return _larger(have, value)
    if merge is Merge.CONCAT:
        have.extend(value)  # in place: a long scan merges many pieces into one list
        return have
    return have | {_hashable(v) for v in value}


def _larger(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b > a) else a


def _nearest_rank(ordered: list[float], p: float) -> float | None:
    return ordered[max(1, math.ceil(p * len(ordered))) - 1] if ordered else None


def _empty(merge: Merge) -> Any:
    """A group's value before its first engineer: a UNION partial is kept as the summed set sizes."""
    return {Merge.SUM: 0, Merge.MAX: None, Merge.CONCAT: []}.get(merge, 0)


_GROUPS = "__engineers"


def _finish(partials: dict[tuple[Any, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group: the second grouping and the row projection of `stats_pipeline`, done here. A UNION
    partial is kept as the summed sizes of its engineers' sets (their members differ by engineer)."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (key, _), part in partials.items():
        group = groups.get(key)
        if group is None:
            groups[key] = group = {"k": part["k"], _GROUPS: 0}
            group.update({p.name: _empty(p.merge) for p in figures.PARTIALS})
        group[_GROUPS] += 1
        for p in figures.PARTIALS:
            value = part[p.name]
            if p.merge is Merge.UNION:
                group[p.name] += len(value)
            elif p.merge is Merge.CONCAT:
                group[p.name] += [v for v in value if isinstance(v, int | float)]
            else:
                group[p.name] = _merged(p.merge, group[p.name], value)
    return [_row_of(group) for group in groups.values()]


def _row_of(group: dict[str, Any]) -> dict[str, Any]:
    """A group's raw row: its key (`_id`), `period_start` and every figure as figures.FIGURES finish it."""
    row: dict[str, Any] = {"_id": group["k"], "period_start": group["k"].get("period")}
    for f in figures.FIGURES:
        made = f.raw
        if made.finish is Finish.VALUE or made.finish is Finish.SIZE:
            row[f.name] = group[made.of[0]]
        elif made.finish is Finish.MEAN:
            total, count = (group[name] for name in made.of)
            row[f.name] = total / count if count else None
        elif made.finish is Finish.PERCENTILE:
            row[f.name] = _nearest_rank(sorted(group[made.of[0]]), made.p)
        elif made.finish is Finish.GROUPS:
            row[f.name] = group[_GROUPS]
        else:
            raise FigureMismatch(f"figure {f.name}: raw events cannot finish {made.finish}")
    return row


async def stats(req: StatsRequest, first: datetime | None) -> list[dict[str, Any]]:
    """Every stats row of `req` from raw events (`_id` holds the group key; metrics as in `METRIC_FIELDS`),
    unordered. `first` is no later than the earliest event (for a range without `since`).

    The scan runs in pieces: consecutive windows of `started_at`, each grouped by the database into partial
    figures per (group, engineer) and merged here, each sized from the last one's time to take about
    `limits.piece_seconds()` of database work. Between pieces the request's deadline is checked and other
    requests' pieces get their turn (`work.piece`); a piece carries the request's id (`comment`) so an
    abandoned request's piece can be killed (see db/work.py for why SecantusDB needs the pieces at all).
    Percentiles are nearest-rank, as the database's `$percentile` gives them on SecantusDB."""
    collection = DownloadEvent.get_pymongo_collection()
    since = req.query.since or first
    until = req.query.until or utcnow()
    target = piece_seconds()
    rid = work.request_id()
    partials: dict[tuple[Any, ...], dict[str, Any]] = {}
    windows: list[Condition] = []
    if since is None:  # nothing says where the events begin: one piece (no rollups to ask)
        windows.append({})
    start, width = since, FIRST_PIECE
    while True:
        if windows:
            window = windows.pop()
            end = None
        elif start is not None and start < until:
            end = until if until - start <= width else start + width  # no overflow near year 9999
            window = time_window("started_at", start, end)
        elif req.query.until is None and start is not None:
            window, end = time_window("started_at", start, None), None  # events stamped after now
            start = None
        else:
            break
        pipeline = _piece_pipeline(req, window)

        async def read(ms: int | None, pipeline: list[Condition] = pipeline) -> tuple[list[Any], float]:
            began = time.monotonic()
            options: dict[str, Any] = {"allowDiskUse": True, **_max_time(ms)}
            cursor = await collection.aggregate(pipeline, comment=rid, **options)
            return [doc async for doc in cursor], time.monotonic() - began

        docs, took = await work.piece(read)
        for doc in docs:
            _merge_partial(partials, doc)
        if end is None:
            if since is None:
                break
            continue
        start = end
        width = max(MIN_PIECE, width * min(4.0, max(0.25, target / max(took, 1e-3))))
    return _finish(partials)


def _max_time(max_time_ms: int | None) -> dict[str, int]:
    return {} if max_time_ms is None else {"maxTimeMS": max_time_ms}
