"""GraphQL over a WebSocket under the rules of an HTTP request: authentication at every operation and while
a socket lives, persisted operations, pricing, rate limits, subscription caps and the URLs of tickets."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from graphql_api.auth import create_token
from graphql_api.config import Settings
from graphql_api.db import connect as connect_db
from graphql_api.documents import ApiToken, utcnow
from graphql_api.http import ui
from graphql_api.operations import sha256_of
from graphql_api.roles import Role
from graphql_api.schema import operations as schema_operations
from tests.servers import GraphQLClient, LiveServer, Stores, make_settings

FEED = "subscription { downloadEvents { status } }"
TRIVIAL = "{ models(first: 1) { totalCount } }"


class Socket:
    """A graphql-transport-ws connection: operations by id, their answers, and how the socket closed."""

    def __init__(self, url: str, params: dict[str, Any] | None = None) -> None:
        self.url = url.replace("http://", "ws://") + "/graphql"
        self.params = params or {}
        self.ws: ClientConnection | None = None

    async def __aenter__(self) -> Socket:
        self.ws = await connect(self.url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        await self.ws.send(json.dumps({"type": "connection_init", "payload": self.params}))
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def send(self, op_id: str, payload: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))

    async def answer(self, op_id: str, seconds: float = 10) -> dict[str, Any]:
        """The first `next` or `error` message of operation `op_id` (others, and pings, are skipped)."""
        assert self.ws is not None
        deadline = time.monotonic() + seconds
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(deadline - time.monotonic(), 0.01))
            message: dict[str, Any] = json.loads(raw)
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif message.get("id") == op_id and message["type"] in ("next", "error"):
                return message

    async def run(self, query: str, variables: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        op_id = f"op{time.monotonic_ns()}"
        await self.send(op_id, {"query": query, "variables": variables or {}, **extra})
        return await self.answer(op_id)

    async def closed(self, seconds: float) -> int:
        """Waits for the server to close the socket; its close code."""
        assert self.ws is not None
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            async with asyncio.timeout(seconds):
                while True:
                    await self.ws.recv()
        assert info.value.rcvd is not None
        return info.value.rcvd.code


def code_of(message: dict[str, Any]) -> str | None:
    """The `extensions.code` of an operation's first error, whether sent as `error` or in a `next`."""
    payload = message["payload"]
    errors = payload if message["type"] == "error" else payload.get("errors")
    return errors[0]["extensions"]["code"] if errors else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def tokens_for(settings: Settings, *names: str, role: Role = Role.READER) -> list[str]:
    """Tokens made before the server starts (Beanie binds its documents to one client per process)."""
    async with connect_db(str(settings.mongo_uri), settings.mongo_db):
        return [(await create_token(n, n, role, "test"))[0] for n in names]


@pytest.fixture
def token_mode(mongo_uri: str, tmp_path: Path) -> Settings:
    return make_settings("local", mongo_uri, None, tmp_path / "data", auth="token", token_cache_seconds=2)


async def test_revocation_refuses_the_next_operation_and_closes_live_sockets(token_mode: Settings) -> None:
    """Once a token is revoked, the next operation on a socket opened with it closes that socket (4401), and
    a socket that only runs a subscription is closed within the token cache period (4401)."""
    (reader,) = await tokens_for(token_mode, "ws-reader")
    (admin,) = await tokens_for(token_mode, "ws-admin", role=Role.ADMIN)
    with LiveServer(token_mode) as server:
        async with (
            Socket(server.url, bearer(reader)) as idle,
            Socket(server.url, bearer(reader)) as watching,
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        ):
            assert code_of(await idle.run(TRIVIAL)) is None
            await watching.send("feed", {"query": FEED})
            await asyncio.sleep(0.3)
            revoke = 'mutation { revokeToken(input: {name: "ws-reader"}) { __typename } }'
            resp = await http.post("/graphql", json={"query": revoke}, headers=bearer(admin))
            assert resp.json()["data"]["revokeToken"]["__typename"] == "ApiToken"
            revoked_at = time.monotonic()
            await idle.send("after", {"query": TRIVIAL})
            assert await idle.closed(5) == 4401
            assert await watching.closed(10) == 4401
            # The cache period is 2 s: the watchdog checks every second, through the shared cache.
            assert time.monotonic() - revoked_at < 6


# slow: waits out ~8s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_an_expired_token_closes_its_socket(token_mode: Settings) -> None:
    """A socket whose token expires is closed (4401) when it expires, not a cache period later, even while
    only a subscription runs on it."""
    settings = token_mode.model_copy(update={"token_cache_seconds": 60.0})
    (token,) = await tokens_for(settings, "ws-expiring")
    async with connect_db(str(settings.mongo_uri), settings.mongo_db):
        record = await ApiToken.find_one(ApiToken.name == "ws-expiring")
        assert record is not None
        await record.set({ApiToken.expires_at: utcnow() + timedelta(seconds=8)})
    with LiveServer(settings) as server:
        async with Socket(server.url, bearer(token)) as sock:
            assert code_of(await sock.run(TRIVIAL)) is None
            await sock.send("feed", {"query": FEED})
            assert await sock.closed(20) == 4401


def _registered() -> tuple[str, str]:
    """A query every instance knows as persisted (the /ui page's), and its hash."""
    ops = dict(schema_operations.split(ui.operations_text()))
    body = ops["UiModels"]
    return body, sha256_of(body)


@pytest.mark.parametrize("mode", ["off", "audit", "enforce"])
async def test_persisted_operation_enforcement_applies_on_sockets(
    mode: str, mongo_uri: str, tmp_path: Path
) -> None:
    """On a socket, as on HTTP: a registered hash alone runs its text, an unknown hash is
    PERSISTED_QUERY_NOT_FOUND, a hash that does not match its text is refused, and `enforce` refuses
    unregistered queries and subscriptions with OPERATION_NOT_PERSISTED."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data", persisted_operations=mode)
    body, sha = _registered()
    hashed = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha}}}
    unknown = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}}
    cases: list[tuple[dict[str, Any], str | None]] = [
        (hashed, None),
        ({"query": body, **hashed}, None),
        (unknown, "PERSISTED_QUERY_NOT_FOUND"),
        ({"query": TRIVIAL, **hashed}, "PERSISTED_QUERY_HASH_MISMATCH"),
        ({"query": TRIVIAL}, "OPERATION_NOT_PERSISTED" if mode == "enforce" else None),
    ]
    with LiveServer(settings) as server:
        async with Socket(server.url) as sock, httpx.AsyncClient(base_url=server.url) as http:
            for payload, expected in cases:
                answer = await sock.run(**{"query": None, **payload})
                assert code_of(answer) == expected, (payload, answer)
                if expected is None:
                    assert answer["payload"]["data"], answer
                over_http = (await http.post("/graphql", json=payload)).json()
                http_code = over_http["errors"][0]["extensions"]["code"] if over_http.get("errors") else None
                assert http_code == expected, (payload, over_http)
            if mode == "enforce":
                assert code_of(await sock.run(FEED)) == "OPERATION_NOT_PERSISTED"
            else:
                await sock.send("sub", {"query": FEED})  # accepted: no answer until a download happens
                with pytest.raises(TimeoutError):
                    await sock.answer("sub", 0.5)


async def test_socket_operations_are_priced_and_rate_limited_like_http(
    mongo_uri: str, tmp_path: Path
) -> None:
    """An operation over the cost limit is refused on a socket as on HTTP (COST_LIMIT_EXCEEDED, nothing
    runs), and mutations on a socket draw on the principal's rate limit."""
    settings = make_settings(
        "local",
        mongo_uri,
        None,
        tmp_path / "data",
        max_query_cost=50,
        rate_limit_per_minute=1,
        rate_limit_burst=1,
    )
    costly = "{ models(first: 100) { edges { node { name description } } } }"
    register = 'mutation($n: String!) { registerModel(input: {name: $n, projectName: "p", bucket: "b", key: "k"}) { __typename } }'
    with LiveServer(settings) as server:
        async with (
            Socket(server.url, {"X-Engineer-ID": "mallory"}) as sock,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            over_http = (await http.post("/graphql", json={"query": costly})).json()
            assert over_http["errors"][0]["extensions"]["code"] == "COST_LIMIT_EXCEEDED"
            assert code_of(await sock.run(costly)) == "COST_LIMIT_EXCEEDED"
            assert code_of(await sock.run(TRIVIAL)) is None
            codes = [code_of(await sock.run(register, {"n": f"m{i}"})) for i in range(3)]
    assert "RATE_LIMITED" in codes, codes


async def test_subscriptions_are_capped_per_principal_and_per_instance(
    mongo_uri: str, tmp_path: Path
) -> None:
    """Past the per-principal cap, and past the instance's, a new subscription ends at once with
    SUBSCRIPTION_LIMIT_REACHED; ending one makes room again."""
    settings = make_settings(
        "local",
        mongo_uri,
        None,
        tmp_path / "data",
        feed_max_subscriptions_per_principal=2,
        feed_max_subscriptions=3,
    )
    with LiveServer(settings) as server:
        async with (
            Socket(server.url, {"X-Engineer-ID": "a"}) as a,
            Socket(server.url, {"X-Engineer-ID": "b"}) as b,
            Socket(server.url, {"X-Engineer-ID": "c"}) as c,
        ):
            for op_id in ("a1", "a2"):
                await a.send(op_id, {"query": FEED})
            await asyncio.sleep(0.3)
            third = await a.run(FEED)
            assert code_of(third) == "SUBSCRIPTION_LIMIT_REACHED" and "principal" in str(third)
            await b.send("b1", {"query": FEED})
            await asyncio.sleep(0.3)
            full = await c.run(FEED)
            assert code_of(full) == "SUBSCRIPTION_LIMIT_REACHED" and "instance" in str(full)
            assert a.ws is not None
            await a.ws.send(json.dumps({"id": "a1", "type": "complete"}))
            await asyncio.sleep(0.3)
            await c.send("c1", {"query": FEED})
            with pytest.raises(TimeoutError):  # running: nothing to say until a download happens
                await c.answer("c1", 0.5)


async def test_tickets_requested_over_a_socket_carry_http_urls(
    mongo_uri: str, tmp_path: Path, bucket: str
) -> None:
    """A ticket requested over a WebSocket points at the server's http:// URL, and downloads."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    Stores("local", settings).put(bucket, "m.bin", b"weights")
    register = 'mutation($b: String!) { registerModel(input: {name: "m", projectName: "p", bucket: $b, key: "m.bin"}) { __typename } }'
    ticket = 'mutation($mode: DownloadMode!) { requestDownload(input: {name: "m", mode: $mode}) { ... on DownloadTicket { url } } }'
    with LiveServer(settings) as server:
        async with Socket(server.url) as sock, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await GraphQLClient(http)(register, {"b": bucket})
            for mode in ("STREAM", "PRESIGNED"):
                answer = await sock.run(ticket, {"mode": mode})
                url = answer["payload"]["data"]["requestDownload"]["url"]
                assert url.startswith(server.url + "/"), url
                assert (await http.get(url)).content == b"weights"


async def test_the_legacy_graphql_ws_protocol_is_not_offered(mongo_uri: str, tmp_path: Path) -> None:
    """Only graphql-transport-ws is served: a client asking for the legacy `graphql-ws` protocol (whose
    handler would skip these checks) is closed with 4406 before any operation."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    with LiveServer(settings) as server:
        url = server.url.replace("http://", "ws://") + "/graphql"
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            async with connect(url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
                await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4406


async def test_an_over_size_message_closes_the_socket_with_1009_and_runs_nothing(
    mongo_uri: str, tmp_path: Path, bucket: str
) -> None:
    """A WebSocket message over MODELHUB_MAX_BODY_BYTES closes the socket with 1009 and executes nothing
    (the mutation it carries registers no model), while the same mutation under the cap registers one."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data", max_body_bytes=4096)
    Stores("local", settings).put(bucket, "m.bin", b"weights")
    register = 'mutation($n: String!, $b: String!) { registerModel(input: {name: $n, projectName: "p", bucket: $b, key: "m.bin"}) { __typename } }'
    padded = register + "\n#" + "x" * 5000 + "\n"
    models = "{ models(first: 10) { nodes { name } } }"
    with LiveServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            async with Socket(server.url) as sock:
                assert (await sock.run(register, {"n": "small", "b": bucket}))["type"] == "next"
                await sock.send("big", {"query": padded, "variables": {"n": "big", "b": bucket}})
                assert await sock.closed(10) == 1009
            listed = await GraphQLClient(http)(models)
    assert [n["name"] for n in listed["models"]["nodes"]] == ["small"]
