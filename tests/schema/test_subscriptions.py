"""The live download feed: change streams reach subscribers on every instance; resumable; bounded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from graphql_api.analytics import feed
from graphql_api.config import Settings
from graphql_api.db import connect
from graphql_api.errors import DomainError
from graphql_api.queries import EventQuery
from tests.servers import GraphQLClient, LiveServer, ServeProcess, Stores, Subscriber

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


async def test_a_subscriber_that_never_reads_slows_nothing(
    settings: Settings, stores: Stores, bucket: str
) -> None:
    """A subscriber that stops reading holds at most its buffer, downloads stay fast, and it is told why."""
    stores.put(bucket, "m.bin", b"weights")
    with ServeProcess(settings) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
            connect(str(settings.mongo_uri), settings.mongo_db),
        ):
            gql = GraphQLClient(http)
            await gql(REGISTER, {"n": "m", "b": bucket})
            stalled = feed.Hub(buffer=5).follow(EventQuery(), "watcher")
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
    assert first.status.value == "ISSUED"
    assert len(held) <= 5 and info.value.code == "SUBSCRIBER_TOO_SLOW"
    assert "reconnect" in info.value.message
    assert elapsed < 10, elapsed  # ten downloads, unhindered by the stalled subscriber
