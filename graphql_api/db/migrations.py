"""Schema migrations of the stored data, run by `connect` before Beanie creates its indexes.

1. One document per version in `models` (before models and versions were split) → the versions move to
   `model_versions` with their ids (download events keep pointing at them) and `models` gets one document
   per name, taking version 1's (or the lowest version's) project and owner.
2. Download events from before resumed downloads were counted as one get `completes` (a COMPLETED event
   that delivered the whole object); versions from before checksums are left PENDING for the verifier.
3. Rollup buckets with an `engineers` array of names get `engineer_bits`, the bitmap of those engineers'
   numbers (db/engineers.py), in its place.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from .engineers import bitmap_from, numbers_for, words_of

log = logging.getLogger("modelhub.migrations")
DUPLICATE_KEY = 11000


async def split_models_and_versions(db: AsyncDatabase[Any]) -> int:
    """Moves old per-version documents out of `models`; returns how many moved (0 once done)."""
    old = db["models"]
    if await old.find_one({"version": {"$exists": True}}) is None:
        return 0
    versions = [doc async for doc in old.find({"version": {"$exists": True}})]
    try:
        await db["model_versions"].insert_many(versions, ordered=False)
    except BulkWriteError as exc:  # an interrupted earlier run already moved some
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
    first: dict[str, dict[str, Any]] = {}
    latest: dict[str, Any] = {}
    for doc in sorted(versions, key=lambda d: d["version"]):
        first.setdefault(doc["name"], doc)
        latest[doc["name"]] = max(latest.get(doc["name"], doc["created_at"]), doc["created_at"])
    await old.delete_many({"version": {"$exists": True}})
    for info in await (await old.list_indexes()).to_list():
        if info["name"] != "_id_":
            await old.drop_index(info["name"])  # per-version indexes; Beanie creates the new ones
    have = {d["name"] async for d in old.find({}, {"name": 1})}
    models = [
        {
            "name": name,
            "project_name": doc["project_name"],
            "owner": doc["owner"],
            "description": doc.get("description"),
            "tags": doc.get("tags", []),
            "aliases": {},
            "created_at": doc["created_at"],
            "updated_at": latest[name],
        }
        for name, doc in first.items()
        if name not in have
    ]
    if models:
        await old.insert_many(models)
    log.warning(
        "migrated %d model versions of %d models to models + model_versions", len(versions), len(first)
    )
    return len(versions)


async def mark_completing_events(db: AsyncDatabase[Any]) -> int:
    """Sets `completes` on events recorded before it existed; runs once (remembered in `migrations`)."""
    done = db["migrations"]
    if await done.find_one({"_id": "event_completes"}) is not None:
        return 0
    events = db["download_events"]
    missing = {"completes": {"$exists": False}}
    whole = {**missing, "status": "COMPLETED", "range_start": {"$in": [None, 0]}, "range_end": None}
    marked = (await events.update_many(whole, {"$set": {"completes": True}})).modified_count
    ranged = {**missing, "status": "COMPLETED", "range_start": {"$in": [None, 0]}}
    async for doc in events.find(ranged, {"range_end": 1, "size_bytes": 1}):
        full = doc.get("range_end") is not None and doc["range_end"] >= doc["size_bytes"] - 1
        await events.update_one({"_id": doc["_id"]}, {"$set": {"completes": full}})
        marked += int(full)
    await events.update_many(missing, {"$set": {"completes": False}})
    await done.update_one({"_id": "event_completes"}, {"$set": {"done": True}}, upsert=True)
    if marked:
        log.warning(
            "marked %d earlier download events as completed downloads; run `modelhub rebuild-rollups` so "
            "that the rollups stop counting partial (Range) fetches",
            marked,
        )
    return marked


async def pend_unhashed_versions(db: AsyncDatabase[Any]) -> int:
    """Versions registered before checksums become PENDING, so the verifier hashes them; runs once."""
    done = db["migrations"]
    if await done.find_one({"_id": "version_checksums"}) is not None:
        return 0
    missing = {"checksum_status": {"$exists": False}}
    result = await db["model_versions"].update_many(missing, {"$set": {"checksum_status": "PENDING"}})
    await done.update_one({"_id": "version_checksums"}, {"$set": {"done": True}}, upsert=True)
    return int(result.modified_count)


async def number_rollup_engineers(db: AsyncDatabase[Any], batch: int = 1000) -> int:
    """Replaces the engineer names of rollup buckets by the bitmap of their numbers; returns how many
    buckets changed (0 once done). Each bucket's update is computed from its own names, so an interrupted
    or concurrent run (two workers starting) converges on the same result."""
    done = db["migrations"]
    if await done.find_one({"_id": "rollup_engineer_bits"}) is not None:
        return 0
    numbers = numbers_for(db)
    changed = 0
    for name in ("download_rollups_daily", "download_rollups_hourly"):
        collection = db[name]
        cursor = collection.find({"engineers": {"$exists": True}}, {"engineers": 1}, batch_size=batch)
        chunk: list[dict[str, Any]] = []
        async for doc in cursor:
            chunk.append(doc)
            if len(chunk) == batch:
                changed += await _number_chunk(collection, chunk, numbers)
                chunk = []
        if chunk:
            changed += await _number_chunk(collection, chunk, numbers)
    await done.update_one({"_id": "rollup_engineer_bits"}, {"$set": {"done": True}}, upsert=True)
    if changed:
        log.warning("numbered the engineers of %d rollup buckets (names → bitmaps)", changed)
    return changed


async def _number_chunk(collection: Any, docs: list[dict[str, Any]], numbers: Any) -> int:
    known = await numbers.numbers(set().union(*(d["engineers"] for d in docs)))
    updates = [
        UpdateOne(
            {"_id": d["_id"]},
            {
                "$set": {"engineer_bits": words_of(bitmap_from(known[e] for e in d["engineers"]))},
                "$unset": {"engineers": ""},
            },
        )
        for d in docs
    ]
    await collection.bulk_write(updates, ordered=False)
    return len(updates)


async def run(db: AsyncDatabase[Any]) -> None:
    await split_models_and_versions(db)
    await mark_completing_events(db)
    await pend_unhashed_versions(db)
    await number_rollup_engineers(db)
