"""What live-feed subscribers cost the rest of the API: p95 of a trivial query with N sockets subscribed.

Usage: python -m bench.feed [--subscribers 0,200,500] [--requests 300]

Starts the embedded SecantusDB and `modelhub serve` (header mode, one worker) as child processes, registers
one model, then for each N opens N graphql-transport-ws sockets (each its own principal) subscribed to
`downloadEvents`, and times sequential trivial queries (`{ model(name: "m") { name } }`, as bench.api) while
they are open. Prints p50/p95/max, how many answered with an error, the change streams the server reports
(`modelhub_feed_streams`) and, after one download, how many subscribers saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench._common import app_env, free_port, start_app, stop
from graphql_api.embedded import EmbeddedMongo

TRIVIAL = '{ model(name: "m") { name } }'
FEED = "subscription { downloadEvents { status } }"
REGISTER = (
    'mutation { registerModel(input: {name: "m", projectName: "p", bucket: "bench", key: "m.bin"}) '
    "{ __typename } }"
)
TICKET = 'mutation { requestDownload(input: {name: "m"}) { ... on DownloadTicket { url } } }'


async def subscribe(url: str, who: str) -> ClientConnection:
    ws = await connect(url, subprotocols=["graphql-transport-ws"], max_queue=None)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"X-Engineer-ID": who}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": FEED}}))
    return ws


async def open_sockets(base: str, count: int) -> list[ClientConnection]:
    url = base.replace("http://", "ws://") + "/graphql"
    sockets: list[ClientConnection] = []
    for start in range(0, count, 50):
        batch = range(start, min(start + 50, count))
        sockets += await asyncio.gather(*(subscribe(url, f"sub{i}") for i in batch))
    return sockets


async def timings(http: httpx.AsyncClient, requests: int) -> tuple[list[float], int]:
    took, errors = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        body = (await http.post("/graphql", json={"query": TRIVIAL})).json()
        took.append((time.perf_counter() - started) * 1000)
        errors += bool(body.get("errors"))
    return took, errors


def feed_streams(metrics: str) -> dict[str, float]:
    found = re.findall(r'^modelhub_feed_streams\{purpose="(\w+)"\} ([0-9.e+]+)$', metrics, re.M)
    return {purpose: float(value) for purpose, value in found}


async def saw_download(sockets: list[ClientConnection], seconds: float = 30) -> int:
    async def one(ws: ClientConnection) -> bool:
        try:
            async with asyncio.timeout(seconds):
                message: dict[str, Any] = json.loads(await ws.recv())
        except (TimeoutError, Exception):
            return False
        return message.get("type") == "next" and "errors" not in message["payload"]

    return sum(await asyncio.gather(*(one(ws) for ws in sockets)))


async def measure(base: str, counts: list[int], requests: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        await http.post("/graphql", json={"query": REGISTER})
        await timings(http, 50)  # warm up
        head = f"{'subscribers':>11} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'errors':>7}"
        print(head + "  streams; saw a download")
        for count in counts:
            sockets = await open_sockets(base, count)
            await asyncio.sleep(2)
            took, errors = await timings(http, requests)
            q = statistics.quantiles(took, n=100)
            streams = feed_streams((await http.get("/metrics")).text)
            seen = "-"
            if sockets:
                await http.post("/graphql", json={"query": TICKET})
                seen = f"{await saw_download(sockets)}/{count}"
            row = f"{count:>11} {q[49]:>7.1f} {q[94]:>7.1f} {max(took):>7.1f} {errors:>7}"
            print(f"{row}  {streams or 'n/a'}; {seen}")
            await asyncio.gather(*(ws.close() for ws in sockets))
            await asyncio.sleep(1)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", default="0,200,500")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelhub-feed-bench-") as tmp:
        data = Path(tmp)
        (data / "objects" / "bench").mkdir(parents=True)
        (data / "objects" / "bench" / "m.bin").write_bytes(b"weights")
        with EmbeddedMongo(data) as mongo:
            print(f"DB: embedded SecantusDB ({mongo.uri})")
            port = free_port()
            app = start_app(app_env(mongo.uri, str(data)), port)
            try:
                await measure(
                    f"http://127.0.0.1:{port}", [int(n) for n in args.subscribers.split(",")], args.requests
                )
            finally:
                stop(app)


if __name__ == "__main__":
    asyncio.run(main())
