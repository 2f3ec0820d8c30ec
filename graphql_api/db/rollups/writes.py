"""Rollup writes: bucket increments (insert then update, never upsert), bulk writes, folds, deletes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime

from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..common import DUPLICATE_KEY, Condition
from .buckets import GRAINS, RollupBucket, RollupDelta, engineer_numbers


async def bump_each(buckets: Sequence[RollupBucket], delta: RollupDelta) -> None:
    """Applies `delta` to each bucket (an event's day and hour, per version and whole model), side by side:
    one round trip of latency for all. Its engineers are numbered once for them all."""
    numbers = await engineer_numbers(delta.engineers)
    updates = {keeps: delta.to_update(numbers, pairs=keeps) for keeps in (False, True)}
    await asyncio.gather(*(_bump(bucket, updates[bucket.grain.keeps_pairs]) for bucket in buckets))


async def _bump(bucket: RollupBucket, update: Condition) -> None:
    """An update first, and an insert only for the bucket's first event."""
    collection = bucket.grain.collection
    if not update:
        return
    if (await collection.update_one({"_id": bucket.key}, update)).matched_count:
        return
    with contextlib.suppress(DuplicateKeyError):
        await collection.insert_one(bucket.empty_document())
    await collection.update_one({"_id": bucket.key}, update)


async def bump_many(
    deltas: Mapping[RollupBucket, RollupDelta], chunk: int = 1000, rolled_to: datetime | None = None
) -> int:
    """`bump` for many buckets in bulk: insert the missing buckets (duplicates ignored), then update;
    `rolled_to`: the roller's watermark they are built to (a rebuild)."""
    items = list(deltas.items())
    numbers = await engineer_numbers(set().union(*(d.engineers for _, d in items)))
    for grain in GRAINS:
        mine = [(b, d) for b, d in items if b.grain is grain]
        for start in range(0, len(mine), chunk):
            part = mine[start : start + chunk]
            inserts = [InsertOne(b.empty_document()) for b, _ in part]
            try:
                await grain.collection.bulk_write(inserts, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                    raise
            updates = [
                UpdateOne({"_id": b.key}, _rolled(d.to_update(numbers, grain.keeps_pairs), rolled_to))
                for b, d in part
            ]
            await grain.collection.bulk_write(updates)
    return len(items)


def _rolled_before(target: datetime) -> Condition:
    """A bucket not yet rolled to `target` (`rolled_to` missing on buckets no fold has written)."""
    return {"$or": [{"rolled_to": {"$lt": target}}, {"rolled_to": None}]}


async def fold(deltas: Mapping[RollupBucket, RollupDelta], target: datetime) -> int:
    """Applies each bucket's delta of one fold of the roller (analytics/roller.py), once: each update also
    sets the bucket's `rolled_to` to `target` and applies only to a bucket whose `rolled_to` is earlier, so
    a fold re-run to the same target (after a crash, or by a second holder) skips the buckets already
    written. One grain after another, the buckets of a grain side by side. Returns the buckets written."""
    numbers = await engineer_numbers(set().union(*(d.engineers for d in deltas.values())))
    written = 0
    for grain in GRAINS:
        mine = [(bucket, delta) for bucket, delta in deltas.items() if bucket.grain is grain]
        found = await asyncio.gather(*(fold_bucket(b, d, numbers, target) for b, d in mine))
        written += sum(found)
    return written


async def fold_bucket(
    bucket: RollupBucket, delta: RollupDelta, numbers: Mapping[str, int], target: datetime
) -> bool:
    """One bucket of a fold: an update first, and an insert only for the bucket's first fold."""
    update = _rolled(delta.to_update(numbers, bucket.grain.keeps_pairs), target)
    flt = {"_id": bucket.key, **_rolled_before(target)}
    collection = bucket.grain.collection
    if (await collection.update_one(flt, update)).matched_count:
        return True
    with contextlib.suppress(DuplicateKeyError):
        await collection.insert_one(bucket.empty_document())
    return bool((await collection.update_one(flt, update)).matched_count)


def _rolled(update: Condition, rolled_to: datetime | None) -> Condition:
    return update if rolled_to is None else {**update, "$set": {"rolled_to": rolled_to}}


async def delete_from(day: datetime | None) -> None:
    """Deletes the buckets (of every length) from `day` on (all of them with None)."""
    for grain in GRAINS:
        await grain.collection.delete_many({grain.field: {"$gte": day}} if day else {})
