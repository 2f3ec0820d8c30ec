"""Totals from the rollups: downloads per day and in all, completed downloads per version and model."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ...documents import DailyModelRollup
from ...queries import EventQuery
from ..common import Condition
from .answers import rollup_filter
from .buckets import DAY, DAY_BY_MODEL, Grain, max_of
from .pending import Pending, keep_query, split


async def first_day() -> datetime | None:
    """The earliest day any event was counted on (None: no buckets): where a raw scan without `since` starts
    (the whole-model days are the fewest buckets; a sorted read of the events themselves scans them all on
    SecantusDB 0.7)."""
    found = await DailyModelRollup.get_pymongo_collection().find_one({}, {"day": 1}, sort=[("day", 1)])
    return None if found is None else found["day"].replace(tzinfo=UTC)


async def downloads_by_day() -> dict[datetime, int]:
    """How many download events started on each UTC day (from the whole-model days: the fewest buckets)."""
    rows = await DAY_BY_MODEL.collection.aggregate([{"$group": {"_id": "$day", "n": {"$sum": "$downloads"}}}])
    return {row["_id"].replace(tzinfo=UTC): int(row["n"]) async for row in rows if row["_id"] is not None}


async def count_downloads(pending: Pending = ()) -> int:
    """All download events, summed from the buckets: a few thousand documents instead of a scan of every
    event (SecantusDB counts a collection by scanning it), from the whole-model days: the fewest; with the
    `pending` stages the roller has not folded yet."""
    leave_out, adjusted = await split(DAY_BY_MODEL, pending, lambda _: True)
    pipeline = [{"$match": leave_out}, {"$group": {"_id": None, "n": {"$sum": "$downloads"}}}]
    rows = await DAY_BY_MODEL.collection.aggregate(pipeline)
    found = [row["n"] async for row in rows]
    return (int(found[0]) if found else 0) + sum(delta.downloads for _, delta in adjusted)


async def _totals(
    match: Condition, key: Callable[[Mapping[str, Any]], Any], grain: Grain, pending: Pending
) -> dict[Any, tuple[int, Any]]:
    """(completed downloads, last completion) per `key` of the buckets matching `match`, with the pending
    stages of the events in them (`match` is over the bucket key fields an event shares)."""
    fields = sorted({name for name in match if name in grain.keys})
    leave_out, adjusted = await split(grain, pending, lambda doc: _inside(match, doc))
    group = {name: f"${name}" for name in fields}
    pipeline: list[Condition] = [
        {"$match": {**match, **leave_out, "completed": {"$gt": 0}}},
        {"$group": {"_id": group, "n": {"$sum": "$completed"}, "last": {"$max": "$last_completed_at"}}},
    ]
    totals: dict[Any, tuple[int, Any]] = {}
    rows = [(r["_id"], r["n"], r["last"]) async for r in await grain.collection.aggregate(pipeline)]
    rows += [(doc, delta.completed, delta.last_completed_at) for doc, delta in adjusted if delta.completed]
    for doc, completed, last in rows:
        n, latest = totals.get(key(doc), (0, None))
        totals[key(doc)] = (n + completed, max_of(latest, last))
    return totals


def _inside(match: Condition, doc: Mapping[str, Any]) -> bool:
    """Whether a stored event's fields satisfy a match of `{field: {"$in": values}}` conditions."""
    return all(doc.get(name) in cond["$in"] for name, cond in match.items())


async def totals_by_version(
    keys: Sequence[tuple[str, int]], pending: Pending = ()
) -> dict[tuple[str, int], tuple[int, Any]]:
    """(completed downloads, last completion) per (name, version) that has any, in one aggregation (and
    the `pending` stages of those versions)."""
    match = {
        "model_name": {"$in": sorted({name for name, _ in keys})},
        "model_version": {"$in": sorted({version for _, version in keys})},
    }
    return await _totals(match, lambda d: (d["model_name"], d["model_version"]), DAY, pending)


async def totals_by_model(names: Sequence[str], pending: Pending = ()) -> dict[str, tuple[int, Any]]:
    """(completed downloads, last completion) per model name across its versions, in one aggregation (and
    the `pending` stages of those models)."""
    match = {"model_name": {"$in": sorted(set(names))}}
    return await _totals(match, lambda d: d["model_name"], DAY_BY_MODEL, pending)


async def completed_by_model(q: EventQuery, pending: Pending = ()) -> dict[str, int] | None:
    """Completed downloads per model name for `q` (without its status condition), with the `pending`
    stages of its events, or None."""
    grain = DAY_BY_MODEL
    match = rollup_filter(q, grain)
    if match is None:
        grain, match = DAY, rollup_filter(q)
    if match is None:
        return None
    leave_out, adjusted = await split(grain, pending, keep_query(q))
    pipeline: list[Condition] = [
        {"$match": {**match, **leave_out}},
        {"$group": {"_id": "$model_name", "c": {"$sum": "$completed"}}},
    ]
    rows = await grain.collection.aggregate(pipeline)
    found = {r["_id"]: r["c"] async for r in rows}
    for doc, delta in adjusted:
        found[doc["model_name"]] = found.get(doc["model_name"], 0) + delta.completed
    return {name: count for name, count in found.items() if count}
