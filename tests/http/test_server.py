"""How `modelhub serve` holds connections (graphql_api/http/server.py and protocols.py), on a real server process over raw
sockets: slow headers, oversized heads, stalled bodies, idle keep-alive connections and WebSockets that never
send `connection_init` are closed, and connections past the cap are refused at once while the server keeps
answering."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from graphql_api.config import Settings
from tests.servers import GraphQLClient, ServeProcess, eventually, make_settings

HEADER_SECONDS = 2.0
BODY_SECONDS = 2.0
KEEP_ALIVE_SECONDS = 1
MAX_CONNECTIONS = 20
MAX_HEADER_BYTES = 16384
# Generous: the machine is shared; a limit that did not hold would keep the connection for ever.
MARGIN = 6.0


@pytest.fixture(scope="module")
def served(
    mongo_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, Settings]]:
    settings = make_settings("local", mongo_uri, None, tmp_path_factory.mktemp("serve") / "data")
    env = {
        "MODELHUB_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
        "MODELHUB_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
        "MODELHUB_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE_SECONDS),
        "MODELHUB_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "MODELHUB_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "MODELHUB_ACCESS_LOG": "false",
        "MODELHUB_RATE_LIMIT_PER_MINUTE": "1000000",
        "MODELHUB_RATE_LIMIT_BURST": "100000",
    }
    with ServeProcess(settings, **env) as server:
        yield server, settings


async def connect(server: ServeProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def until_closed(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (failing after `seconds`)."""
    data = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            data += chunk
    return data


def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        writer.close()


# slow: waits out ~6s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_headers_sent_byte_by_byte_are_cut_after_the_header_timeout(
    served: tuple[ServeProcess, Settings],
) -> None:
    """Slowloris: a request whose headers trickle in a byte every 0.1 s (and a connection that sends
    nothing) gets 408 and is closed once the header timeout has passed, not held while bytes keep coming."""
    server, _ = served
    reader, writer = await connect(server)
    silent_reader, silent = await connect(server)
    started = time.monotonic()
    header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 10_000

    async def trickle() -> None:
        for byte in header:
            writer.write(bytes([byte]))
            with contextlib.suppress(OSError):
                await writer.drain()
            await asyncio.sleep(0.1)

    feeding = asyncio.create_task(trickle())
    try:
        answer = await until_closed(reader, HEADER_SECONDS + MARGIN)
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 ") and b"REQUEST_TIMEOUT" in answer
        assert HEADER_SECONDS - 0.2 <= elapsed < HEADER_SECONDS + MARGIN
        quiet = await until_closed(silent_reader, MARGIN)
        assert quiet.startswith(b"HTTP/1.1 408 ")
    finally:
        feeding.cancel()
        close(writer)
        close(silent)


# slow: waits out ~9s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_a_stalled_body_is_cut_but_a_slow_steady_one_is_not(
    served: tuple[ServeProcess, Settings],
) -> None:
    """A body that stops arriving for longer than the body timeout gets 408 and the connection is closed
    (an upload's staging file is removed); a body whose chunks keep coming, each gap under the timeout,
    is read to the end however long it takes in all."""
    server, settings = served
    query = b'{"query": "{ __typename }"}'
    padded = query + b" " * 700
    reader, writer = await connect(server)
    head = "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"X-Engineer-ID: alice\r\nContent-Length: {len(padded)}\r\n\r\n"
    writer.write(head.encode() + padded[:10])
    await writer.drain()
    started = time.monotonic()
    answer = await until_closed(reader, BODY_SECONDS + MARGIN)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"REQUEST_TIMEOUT" in answer
    assert BODY_SECONDS - 0.2 <= time.monotonic() - started < BODY_SECONDS + MARGIN
    close(writer)

    reader, writer = await connect(server)
    writer.write(head.encode())
    started = time.monotonic()
    for start in range(0, len(padded), 100):  # 8 chunks 0.6 s apart: 4.2 s in all, over twice the timeout
        writer.write(padded[start : start + 100])
        await writer.drain()
        await asyncio.sleep(0.6)
    status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200 "), status
    assert time.monotonic() - started > BODY_SECONDS
    close(writer)

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        data = b"x" * 100_000
        variables = {"name": "slow", "projectName": "p", "sizeBytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        request = """mutation($input: RequestUploadInput!) { requestUpload(input: $input) {
          ... on UploadTicket { url } } }"""
        ticket = await GraphQLClient(http)(request, {"input": variables}, **{"X-Engineer-ID": "alice"})
        path = ticket["requestUpload"]["url"].removeprefix(server.url)
    reader, writer = await connect(server)
    put = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n"
    writer.write(put.encode() + data[:50_000])
    await writer.drain()
    answer = await until_closed(reader, BODY_SECONDS + MARGIN)
    assert answer.startswith(b"HTTP/1.1 408 ")
    close(writer)
    staging = Path(settings.objects_dir) / ".modelhub" / "uploads"

    async def cleaned() -> bool:
        return not any(staging.iterdir())

    assert await eventually(cleaned, MARGIN)


async def test_an_idle_keep_alive_connection_is_closed(served: tuple[ServeProcess, Settings]) -> None:
    """After a response, a kept-alive connection that sends nothing more is closed after the keep-alive
    limit."""
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    rest = await until_closed(reader, KEEP_ALIVE_SECONDS + MARGIN)
    assert b'"ok"' in rest
    assert time.monotonic() - started < KEEP_ALIVE_SECONDS + 3  # uvicorn's own default (5 s) would fail
    close(writer)


async def first_answer(reader: asyncio.StreamReader) -> bytes:
    """What the server says within a second and then closes with, or b"" while it holds the connection."""
    with contextlib.suppress(TimeoutError):
        return await until_closed(reader, 1.0)
    return b""


async def healthz_status(server: ServeProcess) -> int | None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        with contextlib.suppress(httpx.TransportError):
            return (await http.get("/healthz")).status_code
    return None


async def test_at_the_cap_idle_connections_make_room_for_new_ones(
    served: tuple[ServeProcess, Settings],
) -> None:
    """With the cap's worth of connections open and idle, each new connection closes the one that has
    waited longest for its headers (408): a flood of slow connections displaces itself, never more than
    the cap are held, and a normal request is answered meanwhile."""
    server, _ = served
    first = [await connect(server) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0.2)
    later = [await connect(server) for _ in range(10)]
    answers = await asyncio.gather(*(first_answer(reader) for reader, _ in first + later))
    try:
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[:10]), str([a[:12] for a in answers])
        assert answers[10:] == [b""] * MAX_CONNECTIONS
        assert await healthz_status(server) == 200
    finally:
        for _, writer in first + later:
            close(writer)
    await asyncio.sleep(0.3)


# slow: waits out ~4s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_at_the_cap_busy_connections_refuse_new_ones_until_they_are_cut(
    served: tuple[ServeProcess, Settings],
) -> None:
    """With the cap's worth of connections each inside a request (a body that stalls), further ones get
    503 TOO_MANY_CONNECTIONS and are closed at once, a normal request too; once the body timeout has cut
    the stalled ones (their clients doing nothing) normal requests are answered again."""
    server, _ = served
    stalled = []
    for _ in range(MAX_CONNECTIONS):
        reader, writer = await connect(server)
        writer.write(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        stalled.append((reader, writer))
    await asyncio.sleep(0.2)  # their headers are read: every connection is in a request
    extra: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        extra += [await connect(server) for _ in range(10)]
        answers = await asyncio.gather(*(first_answer(reader) for reader, _ in extra))
        assert all(a.startswith(b"HTTP/1.1 503 ") and b"TOO_MANY_CONNECTIONS" in a for a in answers), answers
        assert await healthz_status(server) in (503, None)
        cut = await asyncio.gather(*(until_closed(r, BODY_SECONDS + MARGIN) for r, _ in stalled))
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in cut)

        async def answered() -> bool:
            return await healthz_status(server) == 200

        assert await eventually(answered, MARGIN)
    finally:
        for _, writer in stalled + extra:  # the refused ones too (their server side closed them)
            close(writer)


async def test_a_huge_header_is_refused_once_over_the_cap(served: tuple[ServeProcess, Settings]) -> None:
    """A header that keeps growing (8 MB sent in 64 KB writes) is answered 431 HEADERS_TOO_LARGE and the
    connection closed as soon as the head passes the cap, not parsed to its end; others are answered."""
    server, _ = served
    reader, writer = await connect(server)
    started = time.monotonic()

    async def flood() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        with contextlib.suppress(OSError):
            for _ in range(128):
                writer.write(b"a" * 65536)
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()

    feeding = asyncio.create_task(flood())
    try:
        answer = await until_closed(reader, MARGIN)
        assert answer.startswith(b"HTTP/1.1 431 ") and b"HEADERS_TOO_LARGE" in answer, answer[:200]
        assert time.monotonic() - started < HEADER_SECONDS  # not cut by the header timeout instead
        assert await healthz_status(server) == 200
    finally:
        feeding.cancel()
        close(writer)


def pad(size: int) -> bytes:
    return b"X-Pad: " + b"a" * size + b"\r\n"


async def test_the_head_cap_counts_each_request_head_and_not_bodies(
    served: tuple[ServeProcess, Settings],
) -> None:
    """A head under the cap sent in one write with a 200 KB body is answered; pipelined requests on one
    connection, each head under the cap but together over it, are all answered; a complete head over the cap
    sent in one write is refused 431 (however it is split into reads)."""
    server, _ = served
    below = MAX_HEADER_BYTES * 3 // 4
    body = b'{"query": "{ __typename }"}' + b" " * 200_000
    post = b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + pad(below)
    post += b"X-Engineer-ID: alice\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    get = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + pad(below)
    reader, writer = await connect(server)
    try:
        writer.write(post + get + b"\r\n" + get + b"Connection: close\r\n\r\n")
        await writer.drain()
        answers = await until_closed(reader, MARGIN)
        assert answers.count(b"HTTP/1.1 200 ") == 3 and b"__typename" in answers, answers[:300]
    finally:
        close(writer)
    reader, writer = await connect(server)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + pad(MAX_HEADER_BYTES + 1000) + b"\r\n")
        await writer.drain()
        answer = await until_closed(reader, MARGIN)
        assert answer.startswith(b"HTTP/1.1 431 ") and b"HEADERS_TOO_LARGE" in answer, answer[:200]
    finally:
        close(writer)


async def open_socket(server: ServeProcess, acknowledged: bool = False) -> ClientConnection:
    """A graphql-transport-ws socket; with `acknowledged`, its connection_init sent and acknowledged."""
    url = server.url.replace("http://", "ws://") + "/graphql"
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"], ping_interval=None)  # type: ignore[list-item]
    if acknowledged:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"X-Engineer-ID": "alice"}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
    return ws


async def close_code(ws: ClientConnection, seconds: float) -> int | None:
    """The code the server closed the socket with, or None if it is still open after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    except TimeoutError:
        return None
    except websockets.exceptions.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006


async def test_at_the_cap_websockets_without_connection_init_make_room(
    served: tuple[ServeProcess, Settings],
) -> None:
    """With the cap's worth of WebSockets open, the ones never initialised make room for new connections,
    the one waiting longest first (close 4408): a normal request is answered, not refused 503, and a socket
    whose connection_init was accepted is kept and still runs operations."""
    server, _ = served
    await asyncio.sleep(0.3)  # earlier tests' connections are gone
    kept = await open_socket(server, acknowledged=True)
    idle = [await open_socket(server) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        assert await healthz_status(server) == 200
        assert await close_code(idle[0], MARGIN) == 4408
        assert [await close_code(ws, 0.01) for ws in idle[2:]] == [None] * (MAX_CONNECTIONS - 3)
        await kept.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}}))
        answer = json.loads(await asyncio.wait_for(kept.recv(), 10))
        assert answer["type"] == "next" and answer["payload"]["data"] == {"__typename": "Query"}, answer
    finally:
        for ws in [kept, *idle]:
            await ws.close()
    await asyncio.sleep(0.3)


async def test_a_websocket_without_connection_init_is_closed_after_the_header_timeout(
    served: tuple[ServeProcess, Settings],
) -> None:
    """A socket that never sends connection_init is closed with 4408 once the header timeout has passed,
    not after Strawberry's default minute."""
    server, _ = served
    ws = await open_socket(server)
    started = time.monotonic()
    try:
        assert await close_code(ws, HEADER_SECONDS + MARGIN) == 4408
        assert HEADER_SECONDS - 0.2 <= time.monotonic() - started < HEADER_SECONDS + MARGIN
    finally:
        await ws.close()


def healthz(extra: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


async def test_pipelined_requests_are_all_answered_in_order(served: tuple[ServeProcess, Settings]) -> None:
    """Fifty pipelined requests sent in one write (more than the server queues at once) are each answered,
    in the order sent."""
    server, _ = served
    query = b'{"query": "{ __typename }"}'
    post = b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    post += b"X-Engineer-ID: alice\r\nContent-Length: %d\r\n\r\n" % len(query) + query
    reader, writer = await connect(server)
    try:
        writer.write((healthz() + post) * 25 + healthz(b"Connection: close\r\n"))
        await writer.drain()
        answers = await until_closed(reader, MARGIN * 2)
        parts = answers.split(b"HTTP/1.1 ")[1:]
        assert [part[:6] for part in parts] == [b"200 OK"] * 51, answers[-300:]
        kinds = [b"query" if b"__typename" in part else b"healthz" for part in parts]
        assert kinds == [b"healthz", b"query"] * 25 + [b"healthz"], kinds
    finally:
        close(writer)


async def test_a_pipelined_flood_is_read_only_as_its_requests_are_answered(
    served: tuple[ServeProcess, Settings],
) -> None:
    """A connection pipelining 16 MB of requests (90 header lines each) is read only as its requests are
    answered: once 64 are answered most of the flood still waits in the client's own send buffer (uvicorn
    read and queued a 256 KiB read's worth at each answer, so all of it by then)."""
    server, _ = served
    request = healthz(b"".join(b"X-Header-%02d: v\r\n" % i for i in range(90)))
    flood = request * (16_000_000 // len(request))
    reader, writer = await connect(server)
    try:
        writer.write(flood)
        answers = b""
        async with asyncio.timeout(MARGIN * 2):
            while answers.count(b"HTTP/1.1 200 ") < 64:
                chunk = await reader.read(65536)
                assert chunk, answers[-300:]
                answers += chunk
        assert writer.transport.get_write_buffer_size() > len(flood) // 2
    finally:
        close(writer)


async def test_a_request_with_too_many_header_lines_is_refused(served: tuple[ServeProcess, Settings]) -> None:
    """A request of 101 header lines, its head far under the byte cap, is answered 431 HEADERS_TOO_LARGE
    and the connection closed; one of 100 lines is answered."""
    server, settings = served
    assert settings.max_header_count == 100
    lines = [b"X-H%d: v\r\n" % i for i in range(101)]
    reader, writer = await connect(server)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n" + b"".join(lines[:99]) + b"Host: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MARGIN)
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
        assert length is not None
        await asyncio.wait_for(reader.readexactly(int(length.group(1))), MARGIN)  # the whole answer first
        writer.write(b"GET /healthz HTTP/1.1\r\n" + b"".join(lines) + b"Host: 127.0.0.1\r\n\r\n")
        answer = await until_closed(reader, MARGIN)
        assert answer.startswith(b"HTTP/1.1 431 ") and b"HEADERS_TOO_LARGE" in answer, answer[:200]
    finally:
        close(writer)
