"""Stages the roller may not have folded yet: the buckets they fall in, read as if they were folded."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...queries import EventQuery
from .. import events as events_db
from ..common import Condition
from .buckets import Grain, RollupBucket, RollupDelta, engineer_numbers, stored_figures


@dataclass(frozen=True)
class Staged:
    """One rollup stage of a stored event that may not be in the rollups yet: the event, the stage, when it
    was staged, and what it adds to each of the event's buckets."""

    doc: Mapping[str, Any]
    stage: str
    at: datetime
    delta: RollupDelta


Pending = Sequence[Staged]
Adjusted = list[tuple[Mapping[str, Any], RollupDelta]]


async def split(
    grain: Grain, pending: Pending, keep: Callable[[Mapping[str, Any]], bool]
) -> tuple[Condition, Adjusted]:
    """The buckets of `grain` that pending stages (of events `keep` keeps) fall in: a condition that leaves
    them out of a read, and each of them as stored with the stages it does not hold yet added (a stage
    later than its `rolled_to`; all of them for a bucket not written yet).

    Exact while the roller folds: a bucket and its `rolled_to` change in one update, and each bucket is read
    once, either here or (the others, which no pending stage touches) by the caller's read."""
    staged: dict[str, tuple[RollupBucket, list[Staged]]] = {}
    for stage in pending:
        if keep(stage.doc):
            bucket = RollupBucket.of_doc(stage.doc, grain)
            staged.setdefault(bucket.key, (bucket, []))[1].append(stage)
    if not staged:
        return {}, []
    keys = sorted(staged)
    stored = {doc["_id"]: doc async for doc in grain.collection.find({"_id": {"$in": keys}})}
    out: Adjusted = []
    for key in keys:
        bucket, stages = staged[key]
        doc = stored.get(key)
        rolled = None if doc is None else doc.get("rolled_to")
        delta = RollupDelta() if doc is None else RollupDelta.of_bucket(doc)
        for stage in stages:
            if rolled is None or stage.at > rolled:
                delta.add(stage.delta)
        out.append((doc if doc is not None else bucket.empty_document(), delta))
    return {"_id": {"$nin": keys}}, out


def keep_query(q: EventQuery) -> Callable[[Mapping[str, Any]], bool]:
    return lambda doc: events_db.matches(q, doc)


async def as_stored(grain: Grain, adjusted: Adjusted) -> list[dict[str, Any]]:
    """Buckets with their pending stages added, as they would be stored (engineers numbered into bitmaps).

    SecantusDB quirk: it runs `$documents` only first in a database-level aggregate (`{aggregate: 1}`), not
    inside `$unionWith` on a collection; so the pending buckets come first and the stored ones are unioned
    in, which MongoDB (5.1 on) runs alike."""
    numbers = await engineer_numbers(set().union(*(delta.engineers for _, delta in adjusted)))
    out = []
    for doc, delta in adjusted:
        whole = RollupDelta()
        whole.add(delta)
        whole.engineer_bits, whole.pair_bits = delta.bitmap(numbers), delta.pair_bitmaps(numbers)
        keys = {name: doc.get(name) for name in ("_id", grain.field, *grain.keys)}
        out.append({**keys, **stored_figures(whole, grain.keeps_pairs)})
    return out
