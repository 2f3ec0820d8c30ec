"""GraphQL over a WebSocket under the rules of an HTTP request: authentication at every operation and while
a socket lives, persisted operations, pricing, rate limits, subscription caps and the URLs of tickets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
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
from tests.servers import GraphQLClient, LiveServer, ServeProcess, Stores, make_settings

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


def budgeted(mongo_uri: str, tmp_path: Path, **extra: Any) -> Settings:
    """Small budgets that do not refill within a test (a point every 1,000 s at most)."""
    values: dict[str, Any] = {
        "cost_budget": 10_000,
        "anonymous_cost_budget": 1_000,
        "cost_budget_window_seconds": 1e7,
        **extra,
    }
    return make_settings("local", mongo_uri, None, tmp_path / "data", **values)


async def raw_socket(url: str) -> ClientConnection:
    """A graphql-transport-ws socket that has sent nothing yet."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    return await connect(ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]


async def close_of(ws: ClientConnection, seconds: float = 10) -> tuple[int, str]:
    """Reads (and drops) messages until the server closes `ws`; its close code and reason."""
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def remaining(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> tuple[int, int]:
    """The caller's bucket after a trivial HTTP operation, and what the operation took."""
    body = (await http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)).json()
    cost = body["extensions"]["cost"]
    return cost["remaining"], cost["actual"]


async def test_a_ping_flood_is_closed_with_4429_once_the_anonymous_budget_is_spent(
    mongo_uri: str, tmp_path: Path
) -> None:
    """Pings before connection_init cost the address a point each: past its budget the socket is closed
    (4429, retry advice), while a principal's socket from the same address keeps working."""
    settings = budgeted(mongo_uri, tmp_path, anonymous_cost_budget=50)
    with LiveServer(settings) as server:
        async with Socket(server.url, {"X-Engineer-ID": "bystander"}) as other:
            flood = await raw_socket(server.url)
            for _ in range(80):
                await flood.send(json.dumps({"type": "ping"}))
            pongs = 0
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                async with asyncio.timeout(10):
                    while True:
                        assert json.loads(await flood.recv())["type"] == "pong"
                        pongs += 1
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 4429 and "retry in" in info.value.rcvd.reason
            assert pongs == 50
            assert other.ws is not None
            await other.ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(other.ws.recv(), 10))["type"] == "pong"
            assert code_of(await other.run(TRIVIAL)) is None
        async with Socket(server.url, {"X-Engineer-ID": "late"}) as late:
            assert code_of(await late.run(TRIVIAL)) is None


async def test_messages_are_charged_to_the_address_until_acknowledged_then_to_the_principal(
    mongo_uri: str, tmp_path: Path
) -> None:
    """Pings before connection_init are paid by the client address's anonymous bucket; connection_init and
    the pings after it by the principal it names, and not by the address."""
    settings = budgeted(mongo_uri, tmp_path)
    principal = {"X-Engineer-ID": "pat"}
    with LiveServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            address_before, _ = await remaining(http)
            principal_before, _ = await remaining(http, principal)
            ws = await raw_socket(server.url)
            for _ in range(5):
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
            await ws.send(json.dumps({"type": "connection_init", "payload": principal}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
            for _ in range(7):
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
            await ws.close()
            address_after, address_took = await remaining(http)
            principal_after, principal_took = await remaining(http, principal)
    assert address_before - address_after == 5 + address_took
    assert principal_before - principal_after == 1 + 7 + principal_took


UNREADABLE_MESSAGES = {
    "not JSON": "x",
    "nested too deep": "[" * 5000,
    "not an object": "[1]",
    "a payload that is a string": json.dumps({"type": "subscribe", "id": "1", "payload": "x"}),
    "an id that is a list": json.dumps({"type": "complete", "id": [1]}),
    "an unknown type": json.dumps({"type": "y" * 1000}),
    "a lone surrogate": json.dumps(
        {"type": "subscribe", "id": "1", "payload": {"query": TRIVIAL, "variables": {"a": "x\udc00"}}}
    ),
}


@pytest.mark.parametrize("text", UNREADABLE_MESSAGES.values(), ids=UNREADABLE_MESSAGES.keys())
async def test_an_unreadable_message_closes_the_socket_with_4400_and_logs_no_traceback(
    text: str, mongo_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad JSON, JSON nested too deep, a message that is not an object and a subscribe or complete whose
    fields have the wrong types close the socket with 4400 and a reason, logging nothing at ERROR."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    try:
        with LiveServer(settings) as server, caplog.at_level(logging.INFO):
            async with Socket(server.url) as sock:
                assert sock.ws is not None
                await sock.ws.send(text)
                code, reason = await close_of(sock.ws)
            async with Socket(server.url) as after:  # the server is fine
                assert code_of(await after.run(TRIVIAL)) is None
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert code == 4400 and reason, reason
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


async def test_a_subscribe_whose_variables_are_a_string_closes_with_4400_saying_so(
    mongo_uri: str, tmp_path: Path
) -> None:
    """`variables` that is not an object is refused as on HTTP (not INTERNAL_SERVER_ERROR): the socket is
    closed with 4400 and the HTTP wording as its reason."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    with LiveServer(settings) as server:
        async with Socket(server.url) as sock:
            await sock.send("1", {"query": TRIVIAL, "variables": "x"})
            assert sock.ws is not None
            code, reason = await close_of(sock.ws)
    assert code == 4400
    assert reason == "The GraphQL operation's `variables` must be an object or null, if provided."


def masked_text(payload: bytes) -> bytes:
    """One client text frame (masked, under 126 bytes)."""
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.process  # runs `modelhub serve` (its WebSocket protocol is the one under test)
async def test_a_peer_that_ignores_the_close_and_keeps_sending_is_dropped(
    mongo_uri: str, tmp_path: Path
) -> None:
    """Under `modelhub serve`, after the server's close (Strawberry's 4400 here) a peer that keeps sending instead of
    answering is disconnected once it has sent 64 KiB more, not read and parsed for uvicorn's 10 s."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    with ServeProcess(settings, MODELHUB_ACCESS_LOG="false") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n".encode()
        )
        assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(masked_text(b'{"type":"connection_init","payload":"x"}'))  # Strawberry's 4400
        pings = masked_text(b'{"type":"ping"}') * 1000  # 21 KB
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            for _ in range(12):  # 252 KB, well within the socket buffers: nothing blocks
                writer.write(pings)
                await writer.drain()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(8):
                while await reader.read(65536):
                    pass
        dropped_after = time.monotonic() - started
        writer.close()
    assert dropped_after < 5, dropped_after


async def test_one_principal_holds_at_most_its_sockets(token_mode: Settings) -> None:
    """Past MODELHUB_MAX_SOCKETS_PER_PRINCIPAL acknowledged sockets, a principal's next one is closed with
    4429 naming the setting, another principal's is not, and closing one makes room again."""
    settings = token_mode.model_copy(update={"max_sockets_per_principal": 2})
    hog, other = await tokens_for(settings, "ws-hog", "ws-other")
    with LiveServer(settings) as server:
        async with Socket(server.url, bearer(hog)), Socket(server.url, bearer(hog)) as second:
            async with connect(server.url.replace("http://", "ws://") + "/graphql",
                               subprotocols=["graphql-transport-ws"]) as third:  # type: ignore[list-item]  # fmt: skip
                await third.send(json.dumps({"type": "connection_init", "payload": bearer(hog)}))
                with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                    async with asyncio.timeout(10):
                        while True:
                            await third.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 4429
                assert "MODELHUB_MAX_SOCKETS_PER_PRINCIPAL" in info.value.rcvd.reason
            async with Socket(server.url, bearer(other)) as theirs:
                assert code_of(await theirs.run(TRIVIAL)) is None
            assert code_of(await second.run(TRIVIAL)) is None
        await asyncio.sleep(1)  # the server's side of the two closes
        async with Socket(server.url, bearer(hog)) as one, Socket(server.url, bearer(hog)) as two:
            assert [code_of(await s.run(TRIVIAL)) for s in (one, two)] == [None, None]


async def test_a_peer_leaving_mid_operation_logs_no_traceback(
    mongo_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that sends many operations and drops its connection before their answers costs no traceback
    per operation (nor an "Exception in ASGI application"): its answers just find it gone."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    try:
        with LiveServer(settings) as server, caplog.at_level(logging.INFO):
            for _ in range(3):
                sock = await Socket(server.url).__aenter__()
                assert sock.ws is not None
                for i in range(60):
                    await sock.send(f"op{i}", {"query": TRIVIAL})
                sock.ws.transport.abort()  # gone at once, without a close frame
                await asyncio.wait_for(sock.ws.wait_closed(), 5)
            await asyncio.sleep(1)
            async with Socket(server.url) as after:  # the server is fine
                assert code_of(await after.run(TRIVIAL)) is None
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert "Traceback" not in caplog.text and "Exception in" not in caplog.text, caplog.text[-2000:]
