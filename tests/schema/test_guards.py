"""The cost budget per principal (extensions.cost, RateLimit headers, RATE_LIMITED) over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId

from graphql_api.app import create_app
from graphql_api.auth import create_token
from graphql_api.db import connect
from graphql_api.documents import DownloadEvent
from graphql_api.roles import Role
from tests.servers import LiveServer, make_settings

TRIVIAL = "{ models(first: 1) { totalCount } }"  # priced 2


class Caller:
    def __init__(self, http: httpx.AsyncClient, tokens: dict[str, str]) -> None:
        self.http = http
        self.tokens = tokens

    async def post(self, who: str | None, query: str = TRIVIAL, **headers: str) -> httpx.Response:
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(who, 'mh_not-a-token')}"
        resp = await self.http.post("/graphql", json={"query": query}, headers=headers)
        assert resp.status_code == 200, resp.text
        return resp


async def _app(tmp_path: Path, mongo_uri: str, **limits: Any) -> AsyncIterator[Caller]:
    settings = make_settings("local", mongo_uri, None, tmp_path / "d", auth="token", **limits)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        tokens = {}
        for who, role in [("rita", Role.READER), ("bob", Role.ENGINEER)]:
            tokens[who], _ = await create_token(f"t-{who}", who, role, "test")
        transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            yield Caller(http, tokens)


@pytest.fixture
async def budgeted(tmp_path: Path, mongo_uri: str) -> AsyncIterator[Caller]:
    async for caller in _app(
        tmp_path, mongo_uri, cost_budget=20, anonymous_cost_budget=5, cost_budget_window_seconds=1.5
    ):
        yield caller


@pytest.fixture
async def hourly(tmp_path: Path, mongo_uri: str) -> AsyncIterator[Caller]:
    async for caller in _app(tmp_path, mongo_uri, cost_budget=20, cost_budget_window_seconds=3600):
        yield caller


async def test_every_response_reports_its_cost_and_the_budget_left(hourly: Caller) -> None:
    """extensions.cost and the RateLimit-* headers come with every response, refused ones included."""
    budgeted = hourly
    resp = await budgeted.post("rita")
    body = resp.json()
    assert "errors" not in body, body
    cost = body["extensions"]["cost"]
    assert cost["requested"] == cost["actual"] >= 1
    assert cost["remaining"] == 20 - cost["actual"] and cost["limit"] == 20 and 0 < cost["reset"] <= 3600
    assert resp.headers["ratelimit-limit"] == "20"
    assert resp.headers["ratelimit-remaining"] == str(cost["remaining"])
    assert resp.headers["ratelimit-reset"] == str(cost["reset"])
    broken = (await budgeted.post("rita", "{ models(")).json()  # does not parse: still costs 1 point
    assert broken["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert broken["extensions"]["cost"]["actual"] == 1
    assert broken["extensions"]["cost"]["remaining"] == cost["remaining"] - 1


async def test_a_spent_budget_is_refused_until_it_refills_and_others_are_unaffected(budgeted: Caller) -> None:
    """A principal past its budget gets RATE_LIMITED with Retry-After (nothing runs); bob still gets answers;
    the budget is back after the window."""
    codes = []
    for _ in range(15):
        resp = await budgeted.post("rita")
        body = resp.json()
        codes.append(body["errors"][0]["extensions"]["code"] if "errors" in body else "ok")
        if "errors" in body:
            refused, refused_body = resp, body
            break
    assert codes[-1] == "RATE_LIMITED" and codes.count("ok") >= 5, codes
    assert int(refused.headers["retry-after"]) >= 1
    assert refused_body["errors"][0]["extensions"]["retryAfter"] >= 1
    assert refused_body.get("data") is None
    cost = refused_body["extensions"]["cost"]
    assert cost["actual"] == 0 and cost["remaining"] < max(cost["requested"], 1)  # nothing taken
    assert "errors" not in (await budgeted.post("bob")).json()
    await asyncio.sleep(1.6)
    assert "errors" not in (await budgeted.post("rita")).json()


async def test_anonymous_callers_get_the_smallest_budget_and_pay_for_refusals(budgeted: Caller) -> None:
    """No token or a bad token: UNAUTHENTICATED, yet each refusal is paid from the address's small budget,
    so a no-token flood turns into cheap RATE_LIMITED refusals; principals at other keys are unaffected."""
    first = await budgeted.post(None)
    assert first.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert first.headers["ratelimit-limit"] == "5"
    codes = []
    for who in [None, "nobody", None, "nobody", None, "nobody"]:
        body = (await budgeted.post(who)).json()
        codes.append(body["errors"][0]["extensions"]["code"])
    assert codes[-1] == "RATE_LIMITED" and "UNAUTHENTICATED" in codes, codes
    assert "errors" not in (await budgeted.post("rita")).json()  # same address, its own bucket


async def test_an_operation_over_the_whole_budget_is_over_the_price_limit(
    tmp_path: Path, mongo_uri: str
) -> None:
    """An operation priced above the caller's whole budget could never run: COST_LIMIT_EXCEEDED, not a wait."""
    async for caller in _app(tmp_path, mongo_uri, cost_budget=30):
        body = (await caller.post("rita", "{ models(first: 50) { nodes { name } } }")).json()
        assert body["errors"][0]["extensions"]["code"] == "COST_LIMIT_EXCEEDED"
        assert body["extensions"]["cost"]["actual"] == 1
        assert body["extensions"]["cost"]["requested"] == 1 + 50 * 2  # the price it asked, not 0


def test_websocket_operations_spend_the_budget_and_carry_retry_after(tmp_path: Path, mongo_uri: str) -> None:
    """Over a WebSocket the same budget applies (connection_init taking a point of it); a refusal carries
    extensions.retryAfter."""
    import json

    from websockets.sync.client import connect

    settings = make_settings(
        "local", mongo_uri, None, tmp_path / "d", cost_budget=6, cost_budget_window_seconds=3600
    )
    with LiveServer(settings) as server:
        url = server.url.replace("http", "ws") + "/graphql"
        with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            ws.send(json.dumps({"type": "connection_init", "payload": {"X-Engineer-ID": "wendy"}}))
            assert json.loads(ws.recv())["type"] == "connection_ack"
            codes = []
            for i in range(5):
                ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {"query": TRIVIAL}}))
                while (message := json.loads(ws.recv(timeout=10)))["type"] == "next":
                    assert message["payload"]["extensions"]["cost"]["limit"] == 6
                    codes.append("ok")
                if message["type"] == "error":
                    (error,) = message["payload"]
                    codes.append(error["extensions"]["code"])
                    assert error["extensions"]["retryAfter"] >= 1
    # 6 points: 1 for connection_init, 2 for each operation
    assert codes == ["ok"] * 2 + ["RATE_LIMITED"] * 3, codes


# --- database work bounded by the deadline -------------------------------------------------------------------

# 40 days back: raw scans only answer inside the event retention (MODELHUB_EVENT_RETENTION_DAYS, 90).
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=40)
SINCE, UNTIL = T0.isoformat(), (T0 + timedelta(days=30)).isoformat()
EXPENSIVE = [
    # raw scans of 30 days, aliased as far as the alias limit allows in a realistic document
    "{{ {} }}".format(
        " ".join(
            f'a{i}: downloadStats(groupBy: [ENGINEER], exact: true, limit: 5, filter: {{since: "{SINCE}", '
            f'until: "{UNTIL}"}}) {{ totalRows }}'
            for i in range(10)
        )
    ),
    "{{ {} }}".format(
        " ".join(
            f'b{i}: downloadSeries(by: ENGINEER, since: "{SINCE}", until: "{UNTIL}", top: 50) {{ groups }}'
            for i in range(10)
        )
    ),
]
CHEAP = "{ models(first: 1) { totalCount } }"


def _events(n: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    return [
        {
            "model_id": ObjectId(), "model_name": f"m{rng.randrange(10)}", "model_version": 1,
            "project_name": "p", "size_bytes": 1000, "engineer": f"e{rng.randrange(300)}",
            "mode": "STREAM", "status": "COMPLETED", "bytes_sent": 1000, "completes": True,
            "started_at": T0 + timedelta(seconds=rng.randrange(30 * 86400)),
            "duration_seconds": rng.random(), "finished_at": None,
        }
        for _ in range(n)
    ]  # fmt: skip


async def _cheap_db_query(probe: Any) -> float:
    started = time.monotonic()
    await probe.find_one({"_id": 0})
    return time.monotonic() - started


@pytest.mark.slow  # 40,000 events seeded, then scans held to their deadlines
async def test_an_expensive_loop_leaves_the_database_idle_soon_after_its_last_deadline(
    tmp_path: Path, mongo_uri: str
) -> None:
    """A READER firing the most expensive shapes concurrently in a loop: the database is idle (a cheap query
    back to its baseline time) within 5 s of the last deadline, and another principal's cheap queries keep
    answering meanwhile."""
    deadline = 2.5
    settings = make_settings(
        "local", mongo_uri, None, tmp_path / "d", auth="token", request_timeout_seconds=deadline,
        max_query_cost=10**9, raw_scan_piece_seconds=0.2,
    )  # fmt: skip
    async with connect(mongo_uri, settings.mongo_db) as client:
        events = DownloadEvent.get_pymongo_collection()
        batch = _events(40_000)
        for i in range(0, len(batch), 10_000):
            await events.insert_many(batch[i : i + 10_000], ordered=False)
        tokens = {}
        for who, role in [("rita", Role.READER), ("bob", Role.ENGINEER)]:
            tokens[who], _ = await create_token(f"t-{who}", who, role, "test")
        probe = client[settings.mongo_db]["probe"]
        await probe.insert_one({"_id": 0})
        baseline = sorted([await _cheap_db_query(probe) for _ in range(5)])[2]
        with LiveServer(settings) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

                async def ask(who: str, query: str) -> tuple[dict[str, Any], float]:
                    started = time.monotonic()
                    resp = await http.post(
                        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {tokens[who]}"}
                    )
                    return resp.json(), time.monotonic() - started

                one, _took = await ask("rita", EXPENSIVE[0])
                assert one["errors"][0]["extensions"]["code"] == "DATABASE_TIMEOUT", one
                stop = time.monotonic() + 6
                last_sent = 0.0

                async def attacker() -> None:
                    nonlocal last_sent
                    shape = 0
                    while time.monotonic() < stop:
                        last_sent = time.monotonic()
                        await ask("rita", EXPENSIVE[shape % 2])
                        shape += 1

                cheap: list[tuple[dict[str, Any], float]] = []

                async def bystander() -> None:
                    while time.monotonic() < stop:
                        cheap.append(await ask("bob", CHEAP))
                        await asyncio.sleep(0.1)

                await asyncio.gather(*[attacker() for _ in range(6)], bystander())
                last_deadline = last_sent + deadline
                idle_after = None
                while time.monotonic() < last_deadline + 15:
                    if await _cheap_db_query(probe) <= max(3 * baseline, 0.05):
                        idle_after = time.monotonic() - last_deadline
                        break
                    await asyncio.sleep(0.05)
                print(
                    f"baseline {baseline * 1000:.1f} ms; idle {idle_after} s after the last deadline",
                    flush=True,
                )
    assert idle_after is not None and idle_after < 5, idle_after
    assert cheap and all("errors" not in body for body, _ in cheap), [b for b, _ in cheap if "errors" in b]
    slowest = max(t for _, t in cheap)
    print(f"bystander: {len(cheap)} queries, slowest {slowest:.2f} s")
    assert slowest < 2 * deadline


@pytest.mark.slow  # 40,000 events seeded, then scans held to their deadlines
async def test_a_client_that_leaves_stops_its_database_work(tmp_path: Path, mongo_uri: str) -> None:
    """An HTTP client that hangs up mid-request has its operation cancelled: its raw scan stops taking pieces
    and the database is idle again long before the request's deadline."""
    settings = make_settings(
        "local", mongo_uri, None, tmp_path / "d", request_timeout_seconds=60, max_query_cost=10**9,
        raw_scan_piece_seconds=0.2,
    )  # fmt: skip
    async with connect(mongo_uri, settings.mongo_db) as client:
        batch = _events(40_000)
        for i in range(0, len(batch), 10_000):
            await DownloadEvent.get_pymongo_collection().insert_many(batch[i : i + 10_000], ordered=False)
        probe = client[settings.mongo_db]["probe"]
        await probe.insert_one({"_id": 0})
        baseline = sorted([await _cheap_db_query(probe) for _ in range(5)])[2]
        with LiveServer(settings) as server:
            services = server.server.config.app.state.services
            async with httpx.AsyncClient(base_url=server.url, timeout=1.0) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(
                        "/graphql", json={"query": EXPENSIVE[0]}, headers={"X-Engineer-ID": "eve"}
                    )
            left = time.monotonic()
            stopped = None
            while time.monotonic() < left + 30:
                if services.scans.in_flight == 0 and await _cheap_db_query(probe) <= max(3 * baseline, 0.05):
                    stopped = time.monotonic() - left
                    break
                await asyncio.sleep(0.05)
            # and it stays stopped: no further pieces start (the operation was cancelled, not just paused)
            started = services.scans.started
            await asyncio.sleep(1.0)
            assert services.scans.in_flight == 0 and services.scans.started == started
    print(f"idle {stopped} s after the client left")
    assert stopped is not None and stopped < 5, stopped
