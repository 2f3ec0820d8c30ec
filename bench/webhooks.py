"""Does a slow webhook receiver slow the API? 1,000 one-step downloads completed with a DOWNLOAD_COMPLETED
webhook to a receiver that takes 200 ms per call, against the same run without a webhook: the p95 of
`model(name)` (one client asking in a loop while the downloads run, and for 15 s after, while the outbox
drains), with the time until every delivery has arrived. `modelhub serve` on an embedded SecantusDB.

    python -m bench.webhooks [--downloads 1000] [--clients 4] [--receiver-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench._common import free_port, start_app, stop, wait_http
from graphql_api.auth import create_token
from graphql_api.db import connect
from graphql_api.embedded import EmbeddedMongo
from graphql_api.roles import Role

BUCKET = "bench"
MODEL_QUERY = '{ model(name: "m") { name projectName latestVersion { version } } }'
REGISTER = """mutation { registerModel(input: {name: "m", projectName: "p", bucket: "bench", key: "m.bin"}) {
  __typename } }"""
CREATE = """mutation($url: String!) { createWebhook(input: {url: $url, events: [DOWNLOAD_COMPLETED]}) {
  __typename ... on UserError { message } } }"""


class SlowReceiver:
    """Answers 204 to every POST after `delay` seconds, counting distinct webhook-ids."""

    def __init__(self, delay: float) -> None:
        self.ids: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                time.sleep(delay)
                receiver.ids.add(self.headers["webhook-id"])
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values, default=0.0)


async def probe(base: str, until: asyncio.Event, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"X-Engineer-ID": "probe"}) as http:
        while not until.is_set():
            started = time.perf_counter()
            resp = await http.post("/graphql", json={"query": MODEL_QUERY})
            latencies.append(time.perf_counter() - started)
            assert resp.status_code == 200 and "errors" not in resp.json(), resp.text
            await asyncio.sleep(0.02)


async def downloads(base: str, count: int, clients: int) -> None:
    left = list(range(count))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60, headers={"X-Engineer-ID": "dl"}) as http:
            while left:
                left.pop()
                resp = await http.get("/models/m/download")
                assert resp.status_code == 200, resp.text

    await asyncio.gather(*(client() for _ in range(clients)))


async def scenario(
    mongo_uri: str, data: Path, db: str, args: argparse.Namespace, hook: bool
) -> dict[str, float]:
    async with connect(mongo_uri, db):
        admin, _ = await create_token("bench-admin", "bench-admin", Role.ADMIN, "bench")
    port = free_port()
    env = {"MODELHUB_MONGO_URI": mongo_uri, "MODELHUB_DATA_DIR": str(data), "MODELHUB_AUTH": "header",
           "MODELHUB_MONGO_DB": db, "MODELHUB_RATE_LIMIT_PER_MINUTE": "0",
           "MODELHUB_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]'}  # fmt: skip
    receiver = SlowReceiver(args.receiver_ms / 1000) if hook else None
    app = start_app(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            r = await http.post("/graphql", json={"query": REGISTER}, headers={"X-Engineer-ID": "alice"})
            assert r.json()["data"]["registerModel"]["__typename"] == "ModelVersion", r.text
            if receiver is not None:
                r = await http.post(
                    "/graphql", json={"query": CREATE, "variables": {"url": receiver.url}},
                    headers={"Authorization": f"Bearer {admin}"},
                )  # fmt: skip
                assert r.json()["data"]["createWebhook"]["__typename"] == "WebhookWithSecret", r.text
        during: list[float] = []
        after: list[float] = []
        stop_probe = asyncio.Event()
        prober = asyncio.create_task(probe(base, stop_probe, during))
        started = time.monotonic()
        await downloads(base, args.downloads, args.clients)
        download_seconds = time.monotonic() - started
        stop_probe.set()
        await prober
        stop_after = asyncio.Event()
        prober = asyncio.create_task(probe(base, stop_after, after))
        await asyncio.sleep(15)
        stop_after.set()
        await prober
        drained = float("nan")
        if receiver is not None:
            deadline = time.monotonic() + 600
            while len(receiver.ids) < args.downloads and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            drained = time.monotonic() - started
            print(f"  deliveries received: {len(receiver.ids)} of {args.downloads}")
        return {"during": p95(during), "after": p95(after), "n": len(during), "seconds": download_seconds,
                "median": statistics.median(during), "drained": drained}  # fmt: skip
    finally:
        stop(app)
        if receiver is not None:
            receiver.close()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="modelhub-webhooks-") as tmp:
        data = Path(tmp)
        (data / "objects" / BUCKET).mkdir(parents=True)
        (data / "objects" / BUCKET / "m.bin").write_bytes(random.randbytes(64 * 1024))
        with EmbeddedMongo(data / "db-bench") as mongo:
            print(f"DB: embedded SecantusDB ({mongo.uri}); {args.downloads} downloads by "
                  f"{args.clients} clients, receiver {args.receiver_ms} ms per call")  # fmt: skip
            results = {}
            for name, hook in (("without webhook", False), ("with webhook", True)):
                print(f"{name} ...")
                results[name] = await scenario(mongo.uri, data, "bench_" + name.split()[0], args, hook)
    print(f"{'run':<18}{'downloads s':>12}{'probes':>8}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'p95 after ms':>14}{'drained s':>11}")  # fmt: skip
    for name, r in results.items():
        print(f"{name:<18}{r['seconds']:>12.1f}{r['n']:>8.0f}{r['median'] * 1000:>8.1f}"
              f"{r['during'] * 1000:>8.1f}{r['after'] * 1000:>14.1f}{r['drained']:>11.1f}")  # fmt: skip
    base, hooked = results["without webhook"], results["with webhook"]
    print(f"p95 model(name) with/without: {hooked['during'] / base['during']:.2f}x during the downloads, "
          f"{hooked['after'] / base['after']:.2f}x in the 15 s after (bound: 1.2x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--downloads", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--receiver-ms", type=int, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
