"""The engineer numbers owner and the migration of rollup engineer names to bitmaps (a real SecantusDB)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from graphql_api import queries
from graphql_api.analytics.roller import fill_totals
from graphql_api.analytics.stats import download_stats
from graphql_api.db import connect, migrations
from graphql_api.db.engineers import EngineerNumbers, bitmap_of, numbers_for
from graphql_api.scope import Scope


async def test_concurrent_writers_agree_on_one_number_per_engineer(mongo_uri: str) -> None:
    """Two processes' maps numbering overlapping new names at once give each name one number, distinct names
    distinct numbers, and a fresh map reads the same numbers back."""
    name = "engineers_" + uuid.uuid4().hex[:8]
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        db = client[name]
        first, second = EngineerNumbers(db), EngineerNumbers(db)
        batches = [[f"e{i}" for i in range(start, start + 30)] for start in (0, 10, 20, 5)]
        found = await asyncio.gather(*(m.numbers(batch) for batch in batches for m in (first, second)))
        merged: dict[str, int] = {}
        for numbers in found:
            for engineer, n in numbers.items():
                assert merged.setdefault(engineer, n) == n
        assert len(merged) == 50 and len(set(merged.values())) == 50
        assert await EngineerNumbers(db).numbers(merged) == merged
    finally:
        await client.drop_database(name)
        await client.close()


def test_a_new_client_of_the_same_database_numbers_through_itself(mongo_uri: str) -> None:
    """pymongo's clients of one address compare equal: a process that connects to the same database again,
    on another event loop (an app restarted in-process), gets a map on its own client, not the closed one's."""
    name = "engineers_" + uuid.uuid4().hex[:8]

    async def number(engineer: str) -> int:
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
        try:
            return (await numbers_for(client[name]).numbers([engineer]))[engineer]
        finally:
            await client.close()

    first = asyncio.run(number("alice"))
    assert asyncio.run(number("bob")) == first + 1
    assert asyncio.run(number("alice")) == first


async def test_old_rollup_names_become_bitmaps_once(mongo_uri: str) -> None:
    """Rollup buckets written with engineer names are converted at start: their unique engineers are
    unchanged, the names are gone, new events number on after them, and a second start does nothing."""
    name = "bits_" + uuid.uuid4().hex[:8]
    raw: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    day = datetime(2026, 3, 2, tzinfo=UTC)
    figures = {"downloads": 2, "completed": 2, "aborted": 0, "failed": 0, "bytes_sent": 20,
               "duration_count": 0, "duration_sum": 0.0, "duration_max": None, "last_completed_at": None,
               "duration_hist": {}}  # fmt: skip
    old = [
        {"_id": "2026-03-02|m|1|p|STREAM", "day": day, "model_name": "m", "model_version": 1,
         "project_name": "p", "mode": "STREAM", **figures, "engineers": ["alice", "bob"]},
        {"_id": "2026-03-02|m|2|p|STREAM", "day": day, "model_name": "m", "model_version": 2,
         "project_name": "p", "mode": "STREAM", **figures, "engineers": ["bob", "carol"]},
    ]  # fmt: skip
    await raw[name]["download_rollups_daily"].insert_many(old)
    try:
        async with connect(mongo_uri, name):
            await fill_totals(0.0, 2.0)  # as the app's start does (migration 7)
            stored = await raw[name]["download_rollups_daily"].find().to_list()
            assert all(
                "engineers" not in d and bitmap_of(d["engineer_bits"]).bit_count() == 2 for d in stored
            )
            req = queries.StatsRequest(queries.EventQuery(), [queries.Dimension.MODEL])
            page = await download_stats(Scope.everything(None), req)
            assert page.source is queries.StatsSource.ROLLUP
            assert [(r.model_name, r.downloads, r.unique_engineers) for r in page.rows] == [("m", 4, 3)]
            numbers = await EngineerNumbers(raw[name]).numbers(["alice", "bob", "carol", "dave"])
            assert sorted(numbers.values()) == [0, 1, 2, 3] and numbers["dave"] == 3
        assert await migrations.number_rollup_engineers(raw[name]) == 0
    finally:
        await raw.drop_database(name)
        await raw.close()
