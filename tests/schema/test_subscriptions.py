"""The live download feed: change streams reach subscribers on every instance; resumable; bounded."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bson
import httpx
import pytest
from pymongo.errors import PyMongoError

from graphql_api.analytics import feed, feed_items
from graphql_api.config import Settings
from graphql_api.db import connect
from graphql_api.errors import DomainError
from graphql_api.metrics import Metrics
from graphql_api.queries import EventQuery
from graphql_api.scope import Scope
from tests.servers import (
    GraphQLClient,
    LiveServer,
    ServeProcess,
    ServerProcess,
    Stores,
    Subscriber,
    db_id,
    eventually,
    make_settings,
)

pytestmark = pytest.mark.parametrize("store_kind", ["local"])

FEED = """subscription($f: DownloadFilter, $a: String) {
  downloadEvents(filter: $f, after: $a) { cursor status event { id modelName version engineer status } }
}"""
REGISTER = """mutation($n: String!, $b: String!) {
  registerModel(input: {name: $n, projectName: "p", bucket: $b, key: "m.bin"}) { __typename } }"""
TICKET = """mutation($n: String!) { requestDownload(input: {name: $n}) { ... on DownloadTicket { url download { id } } } }"""


async def download(gql: GraphQLClient, http: httpx.AsyncClient, name: str = "m") -> str:
    ticket = (await gql(TICKET, {"n": name}, **{"X-Engineer-ID": "alice"}))["requestDownload"]
    assert (await http.get(ticket["url"])).status_code == 200
    event_id: str = ticket["download"]["id"]
    return event_id


async def updates(sub: Subscriber, count: int) -> list[dict[str, Any]]:
    got = []
    for _ in range(count):
        message = await sub.next()
        assert message["type"] == "next" and "errors" not in message["payload"], message
        got.append(message["payload"]["data"]["downloadEvents"])
    return got


@pytest.mark.process
async def test_a_download_on_one_instance_reaches_a_subscriber_on_another(
    settings: Settings, stores: Stores, bucket: str
) -> None:
    """Two app instances on one DB: a download through A is seen, transition by transition, on B."""
    stores.put(bucket, "m.bin", b"weights" * 100)
    with LiveServer(settings) as a, ServeProcess(settings) as b:
        async with httpx.AsyncClient(base_url=a.url, timeout=30) as http:
            gql = GraphQLClient(http)
            await gql(REGISTER, {"n": "m", "b": bucket})
            await gql(REGISTER, {"n": "other", "b": bucket})
            async with Subscriber(b.url, FEED, {"f": {"modelNames": ["m"]}}) as sub:
                await asyncio.sleep(0.3)  # the change stream opens once the subscription starts
                await download(gql, http, "other")  # filtered out
                event_id = await download(gql, http)
                got = await updates(sub, 3)
    assert [u["status"] for u in got] == ["ISSUED", "IN_PROGRESS", "COMPLETED"]
    assert {u["event"]["id"] for u in got} == {event_id}
    assert got[0]["event"]["engineer"] == "alice" and got[0]["event"]["version"] == 1


async def test_reconnecting_after_a_cursor_misses_nothing(
    live: LiveServer, live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """A subscriber that reconnects with the cursor of the last update it saw gets every later one."""
    stores.put(bucket, "m.bin", b"weights")
    await live_gql(REGISTER, {"n": "m", "b": bucket})
    async with Subscriber(live.url, FEED) as sub:
        await asyncio.sleep(0.3)
        first_id = await download(live_gql, live_http)
        (first,) = await updates(sub, 1)
    assert first["status"] == "ISSUED" and first["event"]["id"] == first_id
    later = [await download(live_gql, live_http) for _ in range(2)]  # while disconnected
    async with Subscriber(live.url, FEED, {"a": first["cursor"]}) as sub:
        got = await updates(sub, 2 + 3 * 2)
    assert [(u["event"]["id"], u["status"]) for u in got] == [
        (first_id, "IN_PROGRESS"),
        (first_id, "COMPLETED"),
        *[(i, s) for i in later for s in ("ISSUED", "IN_PROGRESS", "COMPLETED")],
    ]
    async with Subscriber(live.url, FEED, {"a": "not-a-cursor"}) as sub:
        message = await sub.next()
    assert message["type"] in ("error", "next")
    assert "malformed cursor" in str(message["payload"])


@contextlib.asynccontextmanager
async def served_model(
    settings: Settings, stores: Stores, bucket: str
) -> AsyncIterator[tuple[ServeProcess, GraphQLClient, httpx.AsyncClient]]:
    """`modelhub serve` with model `m` registered, this process connected to its database (for a hub of
    its own): the server, a GraphQL client and its HTTP client."""
    stores.put(bucket, "m.bin", b"weights")
    with ServeProcess(settings) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
            connect(str(settings.mongo_uri), settings.mongo_db),
        ):
            gql = GraphQLClient(http)
            await gql(REGISTER, {"n": "m", "b": bucket})
            yield server, gql, http


@pytest.mark.process
async def test_a_subscriber_that_never_reads_slows_nothing(
    settings: Settings, stores: Stores, bucket: str
) -> None:
    """A subscriber that stops reading holds at most its buffer, downloads stay fast, it is told why, and
    another subscriber of the same shared stream gets every transition meanwhile."""
    async with served_model(settings, stores, bucket) as (_server, gql, http):
        hub = feed.Hub(buffer=5)
        got: list[feed_items.FeedItem] = []

        async def read_all() -> None:
            async for item in hub.follow(Scope.everything(None), EventQuery(), "reader"):
                got.append(item)

        reading = asyncio.create_task(read_all())
        stalled = hub.follow(Scope.everything(None), EventQuery(), "watcher")
        first_download = asyncio.create_task(download(gql, http))
        first = await anext(stalled)  # reading starts; then the subscriber reads nothing more
        await first_download
        started = time.monotonic()
        for _ in range(10):  # 30 more transitions than the buffer holds
            await download(gql, http)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.5)
        held = []
        with pytest.raises(DomainError) as info:
            async for item in stalled:
                held.append(item)
        assert await eventually(lambda: _async(len(got) == 33)), len(got)
        reading.cancel()
    assert first.status.value == "ISSUED"
    assert len(held) <= 5 and info.value.code == "SUBSCRIBER_TOO_SLOW"
    assert "reconnect" in info.value.message
    assert elapsed < 10, elapsed  # ten downloads, unhindered by the stalled subscriber


def _gauge(metrics: Metrics, purpose: str) -> float:
    value: float = metrics.registry.get_sample_value("modelhub_feed_streams", {"purpose": purpose}) or 0.0
    return value


@pytest.mark.process
async def test_resuming_subscribers_join_the_one_shared_stream(
    settings: Settings, stores: Stores, bucket: str
) -> None:
    """Subscribers of one hub share one change stream; one resuming after a cursor the hub has seen is
    served from its history; one resuming from before the hub opened its stream replays on a stream of its
    own (one at a time here: MODELHUB_FEED_MAX_CATCHING_UP), then joins the shared one once caught up (on a
    quiet database too), missing and repeating nothing."""
    async with served_model(settings, stores, bucket) as (_server, gql, http):
        metrics = Metrics()
        hub = feed.Hub(metrics=metrics)
        live = [hub.follow(Scope.everything(None), EventQuery(), f"e{i}") for i in range(10)]
        firsts = [asyncio.create_task(anext(sub)) for sub in live]
        await asyncio.sleep(0.5)
        first_id = await download(gql, http)
        first = [await task for task in firsts]
        assert {(i.event.id, i.status.value) for i in first} == {(db_id(first_id), "ISSUED")}
        assert _gauge(metrics, "live") == 1 and hub.subscribers == 10
        history = hub.follow(Scope.everything(None), EventQuery(), "h", after=first[0].cursor)
        assert [(await anext(history)).status.value for _ in range(2)] == ["IN_PROGRESS", "COMPLETED"]
        assert _gauge(metrics, "catch_up") == 0

        # A hub that opens its own shared stream after the first download; one replay at a time.
        later = feed.Hub(limits=feed_items.FeedLimits(catching_up=1), metrics=metrics)
        watching = later.follow(Scope.everything(None), EventQuery(), "w")
        watched = asyncio.create_task(anext(watching))
        await asyncio.sleep(0.5)  # its stream opens and reads to the head of the history
        resumed = later.follow(Scope.everything(None), EventQuery(), "r", after=first[0].cursor)
        refused = later.follow(Scope.everything(None), EventQuery(), "r2", after=first[0].cursor)
        replaying, refusing = asyncio.create_task(anext(resumed)), asyncio.create_task(anext(refused))
        with pytest.raises(feed_items.SubscriptionLimitReached):
            await refusing
        replayed = [await replaying, await anext(resumed)]
        assert [i.status.value for i in replayed] == ["IN_PROGRESS", "COMPLETED"]
        assert _gauge(metrics, "live") == 2
        # Caught up on a quiet database: it joins the shared stream without waiting for a new event.
        assert await eventually(lambda: _async(_gauge(metrics, "catch_up") == 0))
        second_id = await download(gql, http)
        after_join = [await anext(resumed) for _ in range(3)]
        assert [(i.event.id, i.status.value) for i in after_join] == [
            (db_id(second_id), s) for s in ("ISSUED", "IN_PROGRESS", "COMPLETED")
        ]
        assert (await watched).event.id == db_id(second_id)
        third_id = await download(gql, http)
        more = [await anext(resumed) for _ in range(3)]
        assert {i.event.id for i in more} == {db_id(third_id)}
        with pytest.raises(TimeoutError):  # nothing twice
            await asyncio.wait_for(anext(resumed), 1)
        for sub in [*live, history, watching]:
            await sub.aclose()
        await asyncio.sleep(0.2)
        # The last subscriber of each hub closed its stream (the timed-out read ended `resumed`).
        assert hub.subscribers == later.subscribers == 0
        assert _gauge(metrics, "live") == _gauge(metrics, "catch_up") == 0


def _forged(cursor: str, **fields: Any) -> str:
    """`cursor` with fields of its SecantusDB token changed (`_data` is the hex of BSON {s, t, n, k})."""
    inner = bson.decode(bytes.fromhex(feed_items.decode_cursor(cursor)["_data"]))
    return feed_items.encode_cursor({"_data": bson.encode({**inner, **fields}).hex()})


def _error(message: dict[str, Any]) -> dict[str, Any]:
    """The first error of a subscription's `error` message, or of a `next` that carries errors."""
    assert message["type"] in ("error", "next"), message
    payload = message["payload"]
    errors: list[dict[str, Any]] = payload if message["type"] == "error" else payload["errors"]
    return errors[0]


async def _catch_up_streams(http: httpx.AsyncClient) -> str:
    text = (await http.get("/metrics")).text
    return next(
        line for line in text.splitlines() if line.startswith('modelhub_feed_streams{purpose="catch_up"}')
    )


async def _first_cursor(url: str, gql: GraphQLClient, http: httpx.AsyncClient) -> tuple[str, str]:
    """A download seen live: its id and the cursor of its ISSUED update."""
    async with Subscriber(url, FEED) as sub:
        await asyncio.sleep(0.3)
        event_id = await download(gql, http)
        (first,) = await updates(sub, 1)
    return event_id, first["cursor"]


@pytest.mark.process
async def test_one_principal_cannot_take_every_replay_slot(
    settings: Settings, stores: Stores, bucket: str
) -> None:
    """Past MODELHUB_FEED_MAX_CATCHING_UP_PER_PRINCIPAL a principal's replay gets SUBSCRIPTION_LIMIT_REACHED
    while another principal still replays from the same cursor under the instance's cap."""
    async with served_model(settings, stores, bucket) as (server, gql, http):
        _, cursor = await _first_cursor(server.url, gql, http)
        hub = feed.Hub(limits=feed_items.FeedLimits(catching_up=4, catching_up_per_principal=2))
        watching = hub.follow(Scope.everything(None), EventQuery(), "w")
        watched = asyncio.create_task(anext(watching))
        await asyncio.sleep(0.5)  # its stream opens: the cursor is older than it, so each one replays
        subs = [hub.follow(Scope.everything(None), EventQuery(), o, after=cursor) for o in "xxxy"]
        got = await asyncio.gather(*(anext(sub) for sub in subs), return_exceptions=True)
        watched.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watched
        for sub in [*subs, watching]:
            await sub.aclose()
    assert [g.status.value if isinstance(g, feed_items.FeedItem) else type(g).__name__ for g in got] == [
        "IN_PROGRESS",
        "IN_PROGRESS",
        "SubscriptionLimitReached",
        "IN_PROGRESS",
    ]
    assert "MODELHUB_FEED_MAX_CATCHING_UP_PER_PRINCIPAL" in str(got[2])


async def test_a_cursor_past_the_present_is_refused_and_holds_no_replay(
    live: LiveServer, live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """A made-up cursor past the database's present (sequence and time at their maximum) ends the
    subscription at once with INVALID_INPUT on `after`, holding no replay stream."""
    stores.put(bucket, "m.bin", b"weights")
    await live_gql(REGISTER, {"n": "m", "b": bucket})
    _, cursor = await _first_cursor(live.url, live_gql, live_http)
    forged = _forged(cursor, s=2**31 - 1, t=bson.Timestamp(2**32 - 1, 1))
    async with Subscriber(live.url, FEED, {"a": forged}) as sub:
        error = _error(await sub.next())
    assert error["extensions"]["code"] == "INVALID_INPUT" and error["extensions"]["field"] == "after"
    assert "past the present" in error["message"]
    assert (await _catch_up_streams(live_http)).endswith(" 0.0")


async def test_a_cursor_the_database_refuses_is_invalid_input(
    live: LiveServer, live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """A cursor whose token the database cannot read, or one of another collection, ends the subscription
    with INVALID_INPUT "malformed cursor" on `after` (as `downloads(after:)` does), not an internal error."""
    stores.put(bucket, "m.bin", b"weights")
    await live_gql(REGISTER, {"n": "m", "b": bucket})
    _, cursor = await _first_cursor(live.url, live_gql, live_http)
    errors = []
    for made_up in (
        feed_items.encode_cursor({"_data": "FFFF"}),
        _forged(cursor, n=f"{uuid.uuid4().hex}.other"),
    ):
        async with Subscriber(live.url, FEED, {"a": made_up}) as sub:
            errors.append(_error(await sub.next()))
    assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in errors] == [
        ("INVALID_INPUT", "after")
    ] * 2
    assert all("malformed cursor" in e["message"] for e in errors)


async def test_a_replay_on_a_quiet_instance_joins_the_shared_stream_without_a_new_event(
    live: LiveServer, live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """A subscriber replaying from an old cursor gives its replay stream back once it has caught up, with no
    new event on the database, and then gets each later transition exactly once."""
    stores.put(bucket, "m.bin", b"weights")
    await live_gql(REGISTER, {"n": "m", "b": bucket})
    first_id, cursor = await _first_cursor(live.url, live_gql, live_http)
    async with Subscriber(live.url, FEED, {"a": cursor}) as sub:
        replayed = await updates(sub, 2)
        joined = await eventually(lambda: _ends(_catch_up_streams(live_http), " 0.0"), 10)
        later_id = await download(live_gql, live_http)
        got = await updates(sub, 3)
        with pytest.raises(TimeoutError):  # nothing twice
            await sub.next(1)
    assert [(u["event"]["id"], u["status"]) for u in replayed] == [
        (first_id, "IN_PROGRESS"),
        (first_id, "COMPLETED"),
    ]
    assert joined
    assert [(u["event"]["id"], u["status"]) for u in got] == [
        (later_id, s) for s in ("ISSUED", "IN_PROGRESS", "COMPLETED")
    ]


async def _ends(line: Any, suffix: str) -> bool:
    return str(await line).endswith(suffix)


async def _async(value: bool) -> bool:
    return value


@pytest.mark.process
async def test_500_subscribers_leave_a_trivial_query_fast(
    store_kind: str, tmp_path: Path, bucket: str
) -> None:
    """500 graphql-transport-ws sockets subscribed to downloadEvents on one instance hold one change stream:
    a trivial query's p95 stays under 50 ms, and every subscriber sees a download."""
    db = ServerProcess("mongo", tmp_path / "db").start()
    try:
        settings = make_settings(store_kind, db.url, None, tmp_path / "data")
        Stores(store_kind, settings).put(bucket, "m.bin", b"weights")
        with ServeProcess(settings, MODELHUB_ACCESS_LOG="false") as server:
            # uvicorn logs each WebSocket on stderr: keep the pipe drained so the server never blocks on it
            threading.Thread(target=server.proc.stderr.read, daemon=True).start()
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                gql = GraphQLClient(http)
                await gql(REGISTER, {"n": "m", "b": bucket})
                subs = [
                    Subscriber(server.url, FEED, connection_params={"X-Engineer-ID": f"s{i}"})
                    for i in range(500)
                ]
                for start in range(0, len(subs), 50):
                    await asyncio.gather(*(sub.__aenter__() for sub in subs[start : start + 50]))
                try:
                    await asyncio.sleep(1)
                    trivial = '{ model(name: "m") { name } }'
                    for _ in range(20):  # warm up
                        await gql(trivial)
                    took = []
                    for _ in range(200):
                        started = time.perf_counter()
                        await gql(trivial)  # fails the test on any error
                        took.append(time.perf_counter() - started)
                    p95 = statistics.quantiles(took, n=100)[94]
                    exposition = (await http.get("/metrics")).text
                    await download(gql, http)
                    seen = await asyncio.gather(*(sub.next(30) for sub in subs))
                finally:
                    await asyncio.gather(*(sub.__aexit__() for sub in subs), return_exceptions=True)
    finally:
        db.stop()
    assert p95 < 0.050, f"p95 {p95 * 1000:.1f} ms"
    assert 'modelhub_feed_streams{purpose="live"} 1.0' in exposition
    assert 'modelhub_feed_streams{purpose="catch_up"} 0.0' in exposition
    assert "modelhub_feed_subscribers 500.0" in exposition
    assert all(m["payload"]["data"]["downloadEvents"]["status"] == "ISSUED" for m in seen)


@pytest.mark.process
async def test_a_database_restart_ends_every_subscriber_and_the_feed_reopens(
    store_kind: str, tmp_path: Path, bucket: str
) -> None:
    """The database killed under a hub: every subscriber of the shared stream gets an error (not silence)
    and is let go; once the database is back, a new subscriber opens a new shared stream and sees downloads."""
    db = ServerProcess("mongo", tmp_path / "db").start()
    try:
        settings = make_settings(store_kind, db.url, None, tmp_path / "data")
        Stores(store_kind, settings).put(bucket, "m.bin", b"weights")
        with ServeProcess(settings) as server:
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=30) as http,
                connect(db.url, settings.mongo_db, serverSelectionTimeoutMS=2000),
            ):
                gql = GraphQLClient(http)
                await gql(REGISTER, {"n": "m", "b": bucket})
                metrics = Metrics()
                hub = feed.Hub(metrics=metrics)
                subs = [hub.follow(Scope.everything(None), EventQuery(), f"e{i}") for i in range(3)]
                firsts = [asyncio.create_task(anext(sub)) for sub in subs]
                await asyncio.sleep(0.5)
                await download(gql, http)
                assert {(await task).status.value for task in firsts} == {"ISSUED"}
                db.kill()
                for sub in subs:  # the driver's error (masked at the edge), within the timeout: not silence
                    async with asyncio.timeout(30):
                        with pytest.raises(PyMongoError):
                            while True:
                                await anext(sub)
                assert hub.subscribers == 0 and _gauge(metrics, "live") == 0
                db.start()
                assert await eventually(lambda: _ready(http), 60)
                again = hub.follow(Scope.everything(None), EventQuery(), "again")
                first_again = asyncio.create_task(anext(again))
                await asyncio.sleep(0.5)
                event_id = await download(gql, http)
                item = await asyncio.wait_for(first_again, 30)
                # The download before the kill may finish only now (its finish retried through the outage).
                earlier = {first.event.id for first in (task.result() for task in firsts)}
                async with asyncio.timeout(30):
                    while item.event.id in earlier:
                        item = await anext(again)
                assert (item.event.id, item.status.value) == (db_id(event_id), "ISSUED")
                assert _gauge(metrics, "live") == 1
                await again.aclose()
    finally:
        db.stop()


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200
