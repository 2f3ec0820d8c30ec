"""Schema migrations of the stored data, run by `connect` before Beanie creates its indexes.

1. One document per version in `models` (before models and versions were split) → the versions move to
   `model_versions` with their ids (download events keep pointing at them) and `models` gets one document
   per name, taking version 1's (or the lowest version's) project and owner.
2. Download events from before resumed downloads were counted as one get `completes` (a COMPLETED event
   that delivered the whole object); versions from before checksums are left PENDING for the verifier.
3. Rollup buckets with an `engineers` array of names get `engineer_bits`, the bitmap of those engineers'
   numbers (db/engineers.py), in its place.
4. The whole-model rollups (per day and per hour) are filled from the per-version ones, once: by one
   process, while any other starting at the same time waits for it (none serves before it is done, so no
   live write can be counted twice); a run left unfinished (a crash) is taken over after 30 s of silence.
5. Projects became permission boundaries: every project that models already use gets a `projects` document,
   INTERNAL with no grants, once (claimed like 4, so two processes starting together create one each), so
   every authenticated principal keeps reading what it read. Tokens keep their role as their global role
   (an ENGINEER token still writes in every project), with no project grants.
6. Download events and rollup buckets from before client kinds get `client_kind: UNKNOWN` (rule
   `before-kinds` on events), and whole-model buckets from before distinct downloads get `pair_bits` (their
   engineers per version) from the per-version buckets of the same start, model and project: exact, since
   those are, before any new write, exactly the events of the whole-model bucket. Once, under a claim like 4.
7. The whole-model totals (all client kinds in one bucket: `*_totals`) are filled from the whole-model
   buckets, once, by the process that holds the roller's lease right after a fold (not from `run`: the
   lifespan calls analytics/roller.py `fill_totals` before it serves or starts its roller). An instance of
   an earlier version that folds after it (a rolling upgrade) leaves the totals behind: run
   `modelhub rebuild-rollups` once the upgrade is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from .common import DUPLICATE_KEY
from .engineers import bitmap_from, numbers_for, words_of
from .rollups import BY_MODEL, GRAINS, TOTALS, Grain, RollupBucket, RollupDelta, Version, pair_words, pairs_of

log = logging.getLogger("modelhub.migrations")


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


async def fill_model_rollups(db: AsyncDatabase[Any], stale_seconds: float = 30) -> int:
    """Builds the whole-model buckets from the per-version buckets, bucket start by bucket start (bounded
    memory); returns how many it wrote (0 once done). Sums add up, maxima take the larger, histograms add
    up per bucket and engineer bitmaps are OR'ed: exactly what the write path would have written."""
    if not await _claim(db, "model_rollups", stale_seconds):
        return 0
    # The grains as they were then: whole-model buckets kept client kinds apart from the start.
    written = await _fill_coarse(db, "model_rollups", BY_MODEL.items())
    await db["migrations"].update_one({"_id": "model_rollups"}, {"$set": {"done": True}})
    if written:
        log.warning("filled %d whole-model rollup buckets from the per-version ones", written)
    return written


async def model_totals_done(db: AsyncDatabase[Any]) -> bool:
    """Whether migration 7 has run (`fill_model_totals`)."""
    return await db["migrations"].find_one({"_id": "model_totals", "done": True}) is not None


async def fill_model_totals(db: AsyncDatabase[Any]) -> int:
    """Migration 7: the whole-model totals (all client kinds together) from the whole-model buckets; returns
    how many it wrote. The caller holds the roller's lease and has just folded (analytics/roller.py
    `fill_totals`): nobody writes a bucket meanwhile and every bucket holds exactly the stages up to the
    watermark, so the totals start exact. They are written afresh each run (a run that died left some)."""
    if await model_totals_done(db):
        return 0
    for total in TOTALS.values():
        await db[str(total.document.Settings.name)].delete_many({})
    written = await _fill_coarse(db, None, TOTALS.items())
    await db["migrations"].update_one({"_id": "model_totals"}, {"$set": {"done": True}}, upsert=True)
    if written:
        log.warning("filled %d whole-model total rollup buckets from the whole-model ones", written)
    return written


async def _fill_coarse(
    db: AsyncDatabase[Any], claim: str | None, pairs: Iterable[tuple[Grain, Grain]]
) -> int:
    """Inserts each coarse grain's buckets summed from its fine grain's, start by start (bounded memory);
    a bucket already there is kept. `claim`: the migration's claim to keep alive meanwhile."""
    written = 0
    for fine, coarse in pairs:
        source = db[str(fine.document.Settings.name)]
        target = db[str(coarse.document.Settings.name)]
        merged: dict[RollupBucket, RollupDelta] = {}
        start: Any = None
        async for doc in source.find({}).sort(fine.field, 1):
            if doc[fine.field] != start:
                written += await _insert_new(target, merged)
                if claim is not None:
                    await _still_running(db, claim)
                merged, start = {}, doc[fine.field]
            kind = (doc.get("client_kind") or "UNKNOWN") if "client_kind" in coarse.keys else None
            bucket = RollupBucket(
                doc[coarse.field], doc["model_name"], None, doc["project_name"], None, coarse, kind
            )
            merged.setdefault(bucket, RollupDelta()).add(RollupDelta.of_bucket(doc))
        written += await _insert_new(target, merged)
    return written


async def mark_client_kinds(db: AsyncDatabase[Any], stale_seconds: float = 30) -> int:
    """Migration 5: UNKNOWN client kinds on earlier events and buckets, and `pair_bits` on earlier
    whole-model buckets; returns how many whole-model buckets got pairs (0 once done)."""
    if not await _claim(db, "client_kinds", stale_seconds):
        return 0
    missing = {"client_kind": {"$exists": False}}
    events = await db["download_events"].update_many(
        missing, {"$set": {"client_kind": "UNKNOWN", "client_kind_rule": "before-kinds"}}
    )
    await _still_running(db, "client_kinds")
    for grain in GRAINS:
        if "client_kind" in grain.keys:  # the totals (migration 7) keep no kinds
            collection = db[str(grain.document.Settings.name)]
            await collection.update_many(missing, {"$set": {"client_kind": "UNKNOWN"}})
    filled = 0
    for fine, coarse in BY_MODEL.items():
        source = db[str(fine.document.Settings.name)]
        target = db[str(coarse.document.Settings.name)]
        if await target.find_one({"pair_bits": {"$exists": False}}, {"_id": 1}) is None:
            continue
        pairs: dict[tuple[Any, str, str], dict[Version, int]] = {}
        start: Any = None
        async for doc in source.find({}).sort(fine.field, 1):
            if doc[fine.field] != start:
                filled += await _set_pairs(target, coarse.field, pairs)
                await _still_running(db, "client_kinds")
                pairs, start = {}, doc[fine.field]
            found = pairs.setdefault((doc[fine.field], doc["model_name"], doc["project_name"]), {})
            for version, bits in pairs_of(doc).items():
                found[version] = found.get(version, 0) | bits
        filled += await _set_pairs(target, coarse.field, pairs)
    await db["migrations"].update_one({"_id": "client_kinds"}, {"$set": {"done": True}})
    if events.modified_count or filled:
        log.warning(
            "marked %d earlier download events UNKNOWN client kind; filled distinct-download pairs of %d "
            "whole-model rollup buckets",
            events.modified_count,
            filled,
        )
    return filled


async def _set_pairs(target: Any, field: str, pairs: dict[tuple[Any, str, str], dict[Version, int]]) -> int:
    """Sets the pairs of the whole-model buckets that have none yet (a re-run leaves done ones alone)."""
    updates = [
        UpdateOne(
            {field: start, "model_name": name, "project_name": project, "pair_bits": {"$exists": False}},
            {"$set": {"pair_bits": pair_words(found)}},
        )
        for (start, name, project), found in pairs.items()
    ]
    if not updates:
        return 0
    result = await target.bulk_write(updates, ordered=False)
    return int(result.modified_count)


async def _insert_new(target: Any, merged: dict[RollupBucket, RollupDelta]) -> int:
    """Inserts the buckets; one already there (an earlier, interrupted run wrote it whole) is kept."""
    if not merged:
        return 0
    try:
        await target.insert_many([bucket.document(delta) for bucket, delta in merged.items()], ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
        return len(merged) - len(exc.details.get("writeErrors", []))
    return len(merged)


async def _claim(db: AsyncDatabase[Any], name: str, stale_seconds: float) -> bool:
    """True when this process is to run migration `name`: nobody has, and the claim is this one's. A process
    that finds it claimed waits until it is done (then False); a claim whose runner has not shown signs of
    life for `stale_seconds` (it died: a restart after a crash, say) is taken over. Each step keeps what an
    earlier run wrote, so a run taken over finishes the job."""
    done = db["migrations"]
    found = await done.find_one({"_id": name})
    if found is not None and found.get("done"):
        return False
    try:
        await done.insert_one({"_id": name, "done": False, "alive_at": time.time()})
        return True
    except DuplicateKeyError:
        pass
    while True:
        found = await done.find_one({"_id": name})
        if found is None or found.get("done"):
            return False
        seen = found.get("alive_at", 0)
        if time.time() - seen > stale_seconds:
            alive = {"$set": {"alive_at": time.time()}}
            taken = await done.update_one({"_id": name, "alive_at": seen}, alive)
            if taken.modified_count:
                log.warning("migration %s was left unfinished: finishing it here", name)
                return True
        await asyncio.sleep(0.5)


async def _still_running(db: AsyncDatabase[Any], name: str) -> None:
    """The claim's sign of life, so that waiting processes do not take it over."""
    await db["migrations"].update_one({"_id": name}, {"$set": {"alive_at": time.time()}})


async def create_projects(db: AsyncDatabase[Any], stale_seconds: float = 30) -> int:
    """An INTERNAL `projects` document for each project name in `models`; returns how many it created."""
    if not await _claim(db, "projects", stale_seconds):
        return 0
    names = sorted({doc["project_name"] async for doc in db["models"].find({}, {"project_name": 1})})
    created = 0
    now = datetime.now(UTC)
    for name in names:
        new = {"name": name, "visibility": "INTERNAL", "grants": [], "created_at": now, "updated_at": now}
        result = await db["projects"].update_one({"name": name}, {"$setOnInsert": new}, upsert=True)
        created += int(result.upserted_id is not None)
        await _still_running(db, "projects")
    await db["migrations"].update_one({"_id": "projects"}, {"$set": {"done": True}})
    if created:
        log.warning("created %d INTERNAL projects for the projects models already use", created)
    return created


async def run(db: AsyncDatabase[Any]) -> None:
    await split_models_and_versions(db)
    await mark_completing_events(db)
    await pend_unhashed_versions(db)
    await number_rollup_engineers(db)
    await fill_model_rollups(db)
    await create_projects(db)
    await mark_client_kinds(db)
