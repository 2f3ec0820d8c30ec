"""Start-up migrations against a real SecantusDB: the whole-model rollups filled from the per-version ones,
the totals from the whole-model ones, client kinds on earlier data."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from graphql_api.analytics.roller import fill_totals
from graphql_api.db import connect, migrations
from graphql_api.db.rollups import BY_MODEL, TOTALS
from tests.analytics.test_stats import make_events, store


async def test_whole_model_rollups_are_filled_like_the_write_path(mongo_uri: str) -> None:
    """Whole-model buckets rebuilt from the per-version ones equal those the write path wrote, field for
    field; of two processes starting at once one fills them and the other waits; a third start does nothing;
    a claim left by a run that died is taken over and the job finished."""
    name = "fill_" + uuid.uuid4().hex[:8]
    raw: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = raw[name]
    try:
        async with connect(mongo_uri, name):
            await store(make_events(80, seed=13), bulk=True)
        written: dict[str, list[dict[str, Any]]] = {}
        for coarse in BY_MODEL.values():
            collection = db[str(coarse.document.Settings.name)]
            written[collection.name] = await collection.find().sort("_id", 1).to_list()
            assert written[collection.name]
            await collection.delete_many({})
        await db["migrations"].delete_one({"_id": "model_rollups"})

        counts = await asyncio.gather(*(migrations.fill_model_rollups(db) for _ in range(2)))
        assert sorted(counts) == [0, sum(len(docs) for docs in written.values())]
        for collection_name, docs in written.items():
            filled = await db[collection_name].find().sort("_id", 1).to_list()
            # Float sums are added in another order: equal up to rounding.
            assert [d.pop("duration_sum") for d in filled] == pytest.approx(
                [d.pop("duration_sum") for d in docs]
            )
            assert filled == docs
        assert await migrations.fill_model_rollups(db) == 0

        for collection_name in written:  # a run that died half way: its claim is taken over, the job finished
            await db[collection_name].delete_many({"_id": {"$gt": written[collection_name][0]["_id"]}})
        await db["migrations"].replace_one({"_id": "model_rollups"}, {"done": False, "alive_at": 0})
        assert await migrations.fill_model_rollups(db) == sum(len(docs) - 1 for docs in written.values())
        assert [len(await db[n].find().to_list()) for n in written] == [len(d) for d in written.values()]
    finally:
        await raw.drop_database(name)
        await raw.close()


async def test_earlier_data_becomes_unknown_kind_with_exact_distinct_pairs(mongo_uri: str) -> None:
    """Events and buckets from before client kinds get UNKNOWN, and whole-model buckets from before distinct
    downloads get the pairs the write path would have written (from the per-version buckets); a second
    run does nothing."""
    from graphql_api.db.rollups import GRAINS, TOTALS
    from graphql_api.documents import ClientKind

    name = "kinds_" + uuid.uuid4().hex[:8]
    raw: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = raw[name]
    try:
        events = make_events(80, seed=17)
        for e in events:
            e["client_kind"] = ClientKind.UNKNOWN
        async with connect(mongo_uri, name):
            await store(events, bulk=True)
        written = {}
        for grain in GRAINS:
            if grain in TOTALS.values():  # filled later (migration 7), from buckets that have kinds
                continue
            collection = db[str(grain.document.Settings.name)]
            written[collection.name] = await collection.find().sort("_id", 1).to_list()
            await collection.update_many({}, {"$unset": {"client_kind": "", "pair_bits": ""}})
        await db["download_events"].update_many({}, {"$unset": {"client_kind": "", "client_kind_rule": ""}})
        await db["migrations"].delete_one({"_id": "client_kinds"})

        filled = await migrations.mark_client_kinds(db)
        assert filled == sum(len(written[str(c.document.Settings.name)]) for c in BY_MODEL.values())
        for collection_name, docs in written.items():
            assert await db[collection_name].find().sort("_id", 1).to_list() == docs, collection_name
        kinds = await db["download_events"].distinct("client_kind")
        rules = await db["download_events"].distinct("client_kind_rule")
        assert (kinds, rules) == (["UNKNOWN"], ["before-kinds"])
        assert await migrations.mark_client_kinds(db) == 0
    finally:
        await raw.drop_database(name)
        await raw.close()


async def test_model_totals_are_filled_like_the_write_path_under_the_lease(mongo_uri: str) -> None:
    """Totals (all client kinds in one bucket) filled from the whole-model buckets equal those the write
    path wrote, pairs and engineers included; of two processes starting at once one fills them under the
    roller's lease and the other finds them done; a run that died half way is redone whole."""
    name = "totals_" + uuid.uuid4().hex[:8]
    raw: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = raw[name]
    try:
        async with connect(mongo_uri, name):
            await store(make_events(120, seed=29), bulk=True)
            kinds = await db["download_rollups_daily_by_model"].distinct("client_kind")
            assert len(kinds) > 1  # the totals merge buckets of several kinds
            written: dict[str, list[dict[str, Any]]] = {}
            for total in TOTALS.values():
                collection = db[str(total.document.Settings.name)]
                written[collection.name] = await collection.find().sort("_id", 1).to_list()
                assert written[collection.name]
                assert all("client_kind" not in d and d["pair_bits"] for d in written[collection.name])
                await collection.delete_many({})
            await db["migrations"].delete_one({"_id": "model_totals"})

            counts = await asyncio.gather(*(fill_totals(0.0, 2.0, wait_seconds=30) for _ in range(2)))
            assert sorted(counts) == [0, sum(len(docs) for docs in written.values())]

            async def same_as_written() -> None:
                for collection_name, docs in written.items():
                    filled = await db[collection_name].find().sort("_id", 1).to_list()
                    assert [d.pop("duration_sum") for d in filled] == pytest.approx(
                        [d["duration_sum"] for d in docs]
                    )
                    assert filled == [{k: v for k, v in d.items() if k != "duration_sum"} for d in docs]

            await same_as_written()
            assert await fill_totals(0.0, 2.0) == 0

            for collection_name in written:  # died half way: some left, one doubled by hand
                await db[collection_name].delete_many({"_id": {"$gt": written[collection_name][0]["_id"]}})
                await db[collection_name].update_one({}, {"$inc": {"completed": 1}})
            await db["migrations"].delete_one({"_id": "model_totals"})
            assert await fill_totals(0.0, 2.0) == sum(len(docs) for docs in written.values())
            await same_as_written()
    finally:
        await raw.drop_database(name)
        await raw.close()
