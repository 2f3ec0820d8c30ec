"""The cost budget per principal (extensions.cost, RateLimit headers, RATE_LIMITED) over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphql_api.app import create_app
from graphql_api.auth import create_token
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


def test_websocket_operations_spend_the_budget_and_carry_retry_after(tmp_path: Path, mongo_uri: str) -> None:
    """Over a WebSocket the same budget applies; a refusal carries extensions.retryAfter."""
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
    assert codes == ["ok"] * 3 + ["RATE_LIMITED"] * 2, codes
