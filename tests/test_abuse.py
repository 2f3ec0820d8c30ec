"""A hostile READER's flood of raw scans against a `modelhub serve` process, the database in its own process
(issue #27): the instance stays ready and another principal keeps being answered."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId

from graphql_api.analytics.rollups import rebuild_rollups
from graphql_api.auth import create_token
from graphql_api.db import connect
from graphql_api.documents import DownloadEvent
from graphql_api.roles import Role
from graphql_api.schema.cost import RAW_EVENTS_PER_POINT, STATS_BASE
from tests.servers import ServeProcess, ServerProcess, make_settings

pytestmark = [pytest.mark.process, pytest.mark.slow]  # 20,000 events, then a 20 s flood

EVENTS = 20_000
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
SCAN = "{ downloadStats(groupBy: [ENGINEER], exact: true, limit: 10) { totalRows } }"
TRIVIAL = "{ models(first: 1) { totalCount } }"


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess("mongo", tmp_path / "mongo").start()
    try:
        yield server
    finally:
        server.stop()


def _events(n: int) -> list[dict[str, Any]]:
    rng = random.Random(27)
    return [
        {
            "model_id": ObjectId(), "model_name": f"m{rng.randrange(10)}", "model_version": 1,
            "project_name": "p", "size_bytes": 1000, "engineer": f"e{rng.randrange(300)}",
            "mode": "STREAM", "status": "COMPLETED", "bytes_sent": 1000, "completes": True,
            "started_at": T0 + timedelta(seconds=rng.randrange(29 * 86400)),
            "duration_seconds": rng.random(), "finished_at": None,
        }
        for _ in range(n)
    ]  # fmt: skip


def _code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or []
    return errors[0].get("extensions", {}).get("code") if errors else None


async def test_a_reader_flooding_exact_grouped_stats_leaves_the_instance_ready_and_others_answered(
    mongo: ServerProcess, tmp_path: Path
) -> None:
    """A READER firing 4 exact downloadStats by ENGINEER at once, in a loop, over 20,000 events: each is
    priced by the events it reads, /readyz never says the database is down, and another principal's trivial
    queries are all answered (none DATABASE_UNAVAILABLE); the flood's own requests end with rows or a typed
    timeout, never a 500."""
    settings = make_settings("local", mongo.url, None, tmp_path / "data", auth="token")
    async with connect(mongo.url, settings.mongo_db):
        batch = _events(EVENTS)
        for i in range(0, EVENTS, 5_000):
            await DownloadEvent.get_pymongo_collection().insert_many(batch[i : i + 5_000], ordered=False)
        await rebuild_rollups()
        rita, _ = await create_token("t-rita", "rita", Role.READER, "test")
        bob, _ = await create_token("t-bob", "bob", Role.ENGINEER, "test")
    env = {
        "MODELHUB_REQUEST_TIMEOUT_SECONDS": "15",
        "MODELHUB_COST_BUDGET": "1000000000",  # the flood is not cut short by the budget: the caps must hold
    }
    with ServeProcess(settings, **env) as serve:
        async with httpx.AsyncClient(base_url=serve.url, timeout=60) as http:

            async def ask(token: str, query: str) -> tuple[int, dict[str, Any]]:
                resp = await http.post(
                    "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
                )
                return resp.status_code, resp.json()

            status, first = await ask(rita, SCAN)
            assert status == 200 and first["data"]["downloadStats"]["totalRows"] == 300, first
            rows = 10 // 10  # limit 10 x one field, ten rows a point
            assert first["extensions"]["cost"]["requested"] == (
                STATS_BASE + math.ceil(EVENTS / RAW_EVENTS_PER_POINT) + rows
            )
            stop = time.monotonic() + 20
            flood: list[tuple[int, str | None]] = []
            bystander: list[str | None] = []
            ready: list[int] = []

            async def attacker() -> None:
                while time.monotonic() < stop:
                    status, body = await ask(rita, SCAN)
                    flood.append((status, _code(body)))

            async def other() -> None:
                while time.monotonic() < stop:
                    status, body = await ask(bob, TRIVIAL)
                    assert status == 200, body
                    bystander.append(_code(body))
                    await asyncio.sleep(0.2)

            async def probe() -> None:
                while time.monotonic() < stop:
                    ready.append((await http.get("/readyz")).status_code)
                    await asyncio.sleep(0.2)

            await asyncio.gather(*[attacker() for _ in range(4)], other(), probe())
    print(
        f"flood: {len(flood)} requests {sorted(set(flood))}; bystander: {len(bystander)}; readyz: {len(ready)}"
    )
    assert flood and all(status == 200 for status, _ in flood), flood
    assert {code for _, code in flood} <= {None, "DATABASE_TIMEOUT"}, flood
    assert bystander and all(code is None for code in bystander), bystander
    assert ready and all(status == 200 for status in ready), ready
