"""A CI fleet pulling a new version at once (issue #28's burst target): a burst of one-step streamed downloads
against `modelhub serve --workers 2`, beside a floor app that streams the same file and records nothing.

Usage: python -m bench.burst [--downloads 1000] [--clients 100] [--size-mib 1] [--data-dir DIR]
                             [--mongo-uri URI] [--probe-hz 20] [--idle-seconds 10]

The embedded SecantusDB (a child process; or --mongo-uri) and the local object store under --data-dir (a
temporary directory by default; a given one is reused, each run registering a model of its own). One httpx
AsyncClient (a connection limit of --clients) runs --clients tasks that GET `/models/{name}/download` (header
identity, read to the last byte) until --downloads are done. Prints:

- downloads/s (and MiB/s), p50/p95/p99 latency (request to last byte) of the downloads, for modelhub and for
  the floor (`bench.burst:floor_app` under `uvicorn --factory --workers 2`: Starlette streaming the same file
  in 1 MiB reads, no access log, no recording), and their ratio (#28's target: at least 0.5x the floor);
- the p99 of a probe `{ model(name) { name } }` sent at a steady --probe-hz (open loop, its own connections)
  while idle before the burst and during it;
- whether every download was recorded exactly once: COMPLETED events (`downloadStats(exact: true)`) equal the
  completed responses and no event is left open, and the default answer (rollups) equals the raw events;
  both are waited for up to 60 s (rollup bumps may be folded asynchronously) and the wait is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from bench._common import (
    app_env,
    arg_parser,
    free_port,
    percentile,
    start_app,
    start_process,
    stop,
    wait_http,
)
from bench.download_throughput import CHUNK, make_artifact
from graphql_api.embedded import EmbeddedMongo

BUCKET = "bench"
FLOOR_FILE_ENV = "BENCH_BURST_FILE"
WHO = {"X-Engineer-ID": "ci-fleet"}
REGISTER = """mutation($i: RegisterModelInput!) { registerModel(input: $i) {
  __typename ... on UserError { code message } } }"""
FIGURES = "downloads completed aborted failed totalBytes"
STATS = f"""query($m: [String!]) {{
  raw: downloadStats(groupBy: [], filter: {{modelNames: $m}}, exact: true) {{ source rows {{ {FIGURES} }} }}
  rollup: downloadStats(groupBy: [], filter: {{modelNames: $m}}) {{ source rows {{ {FIGURES} }} }}
  byStatus: downloadStats(groupBy: [STATUS], filter: {{modelNames: $m}}, exact: true) {{
    rows {{ status downloads }} }} }}"""
CATCH_UP_SECONDS = 60


# --- the floor: the same file through the same server stack, recording nothing ------------------------------


async def _floor_file(request: Request) -> Response:
    path = Path(request.app.state.path)
    size = (await anyio.to_thread.run_sync(path.stat)).st_size

    async def chunks() -> AsyncIterator[bytes]:
        fh = await anyio.to_thread.run_sync(path.open, "rb")
        try:
            while chunk := await anyio.to_thread.run_sync(fh.read, CHUNK):
                yield chunk
        finally:
            await anyio.to_thread.run_sync(fh.close)

    headers = {"content-length": str(size)}
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


async def _floor_health(request: Request) -> Response:
    return PlainTextResponse("ok")


def floor_app() -> Starlette:
    """The uvicorn factory of the floor: GET /file streams the file named by $BENCH_BURST_FILE."""
    app = Starlette(routes=[Route("/file", _floor_file), Route("/healthz", _floor_health)])
    app.state.path = os.environ[FLOOR_FILE_ENV]
    return app


def start_floor(path: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "bench.burst:floor_app", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--no-access-log",
           "--log-level", "warning"]  # fmt: skip
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {FLOOR_FILE_ENV: str(path), "PYTHONPATH": pythonpath}
    return start_process(cmd, env, f"http://127.0.0.1:{port}/healthz")


# --- load ---------------------------------------------------------------------------------------------------


@dataclass
class Burst:
    """What the clients saw: each completed download's latency, and every outcome by kind."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]


async def download(http: httpx.AsyncClient, url: str, size: int, burst: Burst) -> None:
    started = time.perf_counter()
    received = 0
    try:
        async with http.stream("GET", url, headers=WHO) as resp:
            async for chunk in resp.aiter_raw():
                received += len(chunk)
    except httpx.HTTPError as exc:
        burst.outcomes[f"error:{type(exc).__name__}"] += 1
        return
    if resp.status_code != 200:
        burst.outcomes[f"status:{resp.status_code}"] += 1
    elif received != size:
        burst.outcomes["short"] += 1
    else:
        burst.outcomes["ok"] += 1
        burst.latencies.append(time.perf_counter() - started)


async def run_burst(url: str, size: int, downloads: int, clients: int, burst: Burst) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    left = downloads

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await download(http, url, size, burst)

    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        burst.seconds = time.perf_counter() - started


async def warm_up(url: str, size: int, n: int, burst: Burst) -> None:
    """A few downloads first (connections, caches, both workers); `burst` counts them for the check."""
    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(download(http, url, size, burst) for _ in range(n)))


def probe_document(name: str) -> str:
    return f'{{ model(name: "{name}") {{ name }} }}'


class Probe:
    """`{ model(name) { name } }` sent every 1/hz seconds whether or not the last one has answered (so a
    stalled server shows in the figures rather than slowing the probe), on connections of its own."""

    def __init__(self, base: str, name: str, hz: float) -> None:
        self.base, self.hz = base, hz
        self.body = {"query": probe_document(name)}
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    async def one(self, http: httpx.AsyncClient, into: list[float]) -> None:
        started = time.perf_counter()
        try:
            resp = await http.post("/graphql", json=self.body, headers=WHO)
            answer = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.errors[type(exc).__name__] += 1
            return
        if resp.status_code != 200 or answer.get("errors") or not (answer.get("data") or {}).get("model"):
            self.errors[f"status:{resp.status_code}"] += 1
            return
        into.append(time.perf_counter() - started)

    async def run(self, until: asyncio.Event) -> list[float]:
        into: list[float] = []
        async with httpx.AsyncClient(base_url=self.base, timeout=60) as http, asyncio.TaskGroup() as tasks:
            tick = time.monotonic()
            while not until.is_set():
                tasks.create_task(self.one(http, into))
                tick += 1 / self.hz
                with suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), max(0.0, tick - time.monotonic()))
        return into

    async def for_seconds(self, seconds: float) -> list[float]:
        until = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, until.set)
        return await self.run(until)


# --- the recording check ------------------------------------------------------------------------------------


def _total(answer: dict[str, Any]) -> dict[str, int]:
    rows = answer["rows"]
    return {k: rows[0][k] if rows else 0 for k in FIGURES.split()}


def _figures(total: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in total.items())


async def recording(base: str, name: str, seen: Burst) -> list[str]:
    """Polls until the raw events and the rollups agree with what the clients saw (or 60 s pass)."""
    started = time.monotonic()
    events_at = rollups_at = None
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=WHO) as http:
        while True:
            body = {"query": STATS, "variables": {"m": [name]}}
            answer = (await http.post("/graphql", json=body)).json()
            if answer.get("errors"):
                raise RuntimeError(answer["errors"])
            data = answer["data"]
            raw, rollup = _total(data["raw"]), _total(data["rollup"])
            by_status = {r["status"]: r["downloads"] for r in data["byStatus"]["rows"]}
            open_ = by_status.get("ISSUED", 0) + by_status.get("IN_PROGRESS", 0)
            now = time.monotonic() - started
            if events_at is None and raw["completed"] == seen.ok and not open_:
                events_at = now
            if rollups_at is None and events_at is not None and rollup == raw:
                rollups_at = now
            if rollups_at is not None or now > CATCH_UP_SECONDS:
                break
            await asyncio.sleep(0.5)

    def verdict(at: float | None) -> str:
        return f"OK after {at:.1f} s" if at is not None else f"MISMATCH after {CATCH_UP_SECONDS} s"

    return [
        f"completed responses {seen.ok} of {sum(seen.outcomes.values())} requests (warm-up included); "
        f"raw events: {raw['completed']} completed of {raw['downloads']}, by status {by_status}: "
        f"{verdict(events_at)}",
        f"default answer (source {data['rollup']['source']}): {_figures(rollup)}; raw (source "
        f"{data['raw']['source']}): {_figures(raw)}: {verdict(rollups_at)}",
    ]


# --- the run ------------------------------------------------------------------------------------------------


def row(label: str, burst: Burst, size: int) -> str:
    rate = burst.ok / burst.seconds if burst.seconds else float("nan")
    ms = [percentile(burst.latencies, q) * 1000 for q in (0.5, 0.95, 0.99)]
    errors = sum(burst.outcomes.values()) - burst.ok
    return (f"{label:<10}{rate:>12.1f}{rate * size / 2**20:>9.1f}{ms[0]:>9.1f}{ms[1]:>9.1f}{ms[2]:>9.1f}"
            f"{burst.ok:>7}{errors:>8}")  # fmt: skip


async def modelhub(
    args: argparse.Namespace, mongo_uri: str, data: Path, size: int
) -> tuple[Burst, list[str]]:
    name = f"burst-{time.strftime('%Y%m%d-%H%M%S')}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start_app(app_env(mongo_uri, data, db="bench_burst"), port, workers=args.workers)
    try:
        wait_http(f"{base}/readyz")
        variables = {"i": {"name": name, "projectName": "burst", "bucket": BUCKET, "key": artifact_key(args)}}
        async with httpx.AsyncClient(base_url=base, timeout=60, headers=WHO) as http:
            answer = (await http.post("/graphql", json={"query": REGISTER, "variables": variables})).json()
        assert answer["data"]["registerModel"]["__typename"] == "ModelVersion", answer
        url = f"{base}/models/{name}/download"
        seen = Burst()  # every download the server was asked for, warm-up included
        await warm_up(url, size, 4, seen)
        probe = Probe(base, name, args.probe_hz)
        idle = await probe.for_seconds(args.idle_seconds)
        burst = Burst()
        done = asyncio.Event()
        during = asyncio.create_task(probe.run(done))
        try:
            await run_burst(url, size, args.downloads, args.clients, burst)
        finally:
            done.set()
            busy = await during
        seen.outcomes.update(burst.outcomes)
        lines = await recording(base, name, seen)
    finally:
        stop(app)
    p_idle, p_busy = percentile(idle, 0.99) * 1000, percentile(busy, 0.99) * 1000
    lines.insert(
        0,
        f"probe model(name) p99: idle {p_idle:.1f} ms ({len(idle)} probes), during the burst {p_busy:.1f} ms "
        f"({len(busy)} probes, {p_busy / p_idle:.1f}x); probe errors {dict(probe.errors) or 0}",
    )
    return burst, lines


async def floor(args: argparse.Namespace, path: Path, size: int) -> Burst:
    port = free_port()
    proc = start_floor(path, port, args.workers)
    try:
        url = f"http://127.0.0.1:{port}/file"
        await warm_up(url, size, 4, Burst())
        burst = Burst()
        await run_burst(url, size, args.downloads, args.clients, burst)
        return burst
    finally:
        stop(proc)


def artifact_key(args: argparse.Namespace) -> str:
    return f"burst/{args.size_mib}mib.bin"


@contextmanager
def database(args: argparse.Namespace, data: Path) -> Iterator[tuple[str, str]]:
    """The MongoDB URI to use and how to name it in the output."""
    if args.mongo_uri:
        yield args.mongo_uri, "MongoDB at --mongo-uri"
        return
    with EmbeddedMongo(data) as mongo:
        yield mongo.uri, f"embedded SecantusDB ({mongo.uri}, files in {data / 'db'})"


async def run(args: argparse.Namespace) -> None:
    size = args.size_mib * CHUNK
    with tempfile.TemporaryDirectory(prefix="modelhub-burst-") as tmp:
        data = Path(args.data_dir or tmp)
        path = data / "objects" / BUCKET / artifact_key(args)
        if not path.exists() or path.stat().st_size != size:
            make_artifact(path, size)
        with database(args, data) as (mongo_uri, db_name):
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"DB: {db_name}; local object store under {data}")
            print(f"{args.downloads} one-step streamed downloads of {args.size_mib} MiB by {args.clients} "
                  f"clients against --workers {args.workers}; {os.cpu_count()} cores, "
                  f"load average {load}")  # fmt: skip
            ours, lines = await modelhub(args, mongo_uri, data, size)
        bare = await floor(args, path, size)
    titles = f"{'downloads/s':>12}{'MiB/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'ok':>7}{'errors':>8}"
    print(f"{'server':<10}{titles}")
    print(row("modelhub", ours, size))
    print(row("floor", bare, size))
    for label, burst in (("modelhub", ours), ("floor", bare)):
        for kind, n in sorted(burst.outcomes.items()):
            if kind != "ok":
                print(f"{label} {kind}: {n}")
    ratio = (ours.ok / ours.seconds) / (bare.ok / bare.seconds) if bare.ok and ours.seconds else float("nan")
    print(f"modelhub vs floor: {ratio:.2f}x the floor's downloads/s (#28 target: at least 0.5x)")
    for line in lines:
        print(line)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--downloads", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--size-mib", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--probe-hz", type=float, default=20)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument(
        "--data-dir", type=Path, help="keep the DB and the artifact here and reuse them next time"
    )
    parser.add_argument("--mongo-uri", help="a MongoDB of your own instead of the embedded SecantusDB")
    try:
        asyncio.run(run(parser.parse_args()))
    except KeyboardInterrupt:  # the `finally`s have stopped every server
        sys.exit(130)


if __name__ == "__main__":
    main()
