"""Per-request cost of the API against its floors: a bare Strawberry app and the same DB work in pymongo.

Usage: python -m bench.api [--names 2000,20000] [--seconds 5]

Starts the embedded SecantusDB and `modelhub serve` (header mode, one worker) as child processes, and a bare
Strawberry app (same uvicorn, httptools and uvloop) that serves the same selection from memory. Prints, per
shape: the app's median latency and CPU per request (the server process's own CPU time), the floor's, and the
DB work done straight with pymongo; then registration (sequential median and 16-client throughput) and
`models(first: 50, filter: {namePrefix})` at each registry size, beside pymongo's plain query and pymongo
doing the app's own name windows; the first page in the default order (newest first) and by name without a
prefix, beside pymongo's plain query. The DB is named in the output. The app runs its defaults (model cache
and access log on); `MODELHUB_ACCESS_LOG=false python -m bench.api` measures it without the access log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench._common import app_env, free_port, start_app, stop, wait_http
from graphql_api.db.paging import string_windows
from graphql_api.embedded import EmbeddedMongo

BUCKET = "bench"
TRIVIAL = '{ model(name: "m00000") { name } }'
PREFIX_QUERY = (
    '{ models(first: 50, filter: {namePrefix: "m01"}, orderBy: {field: NAME, direction: ASC}) '
    "{ nodes { name } } }"
)
NEWEST_QUERY = "{ models(first: 50) { nodes { name } } }"  # the default order: newest first
NEWEST_SORT = [("created_at", -1), ("_id", -1)]
NAME_QUERY = "{ models(first: 50, orderBy: {field: NAME, direction: ASC}) { nodes { name } } }"
FLOOR_APP = textwrap.dedent(
    """
    import strawberry, uvicorn, sys
    from strawberry.asgi import GraphQL
    from strawberry.extensions import ParserCache, ValidationCache

    @strawberry.type
    class Model:
        name: str

    @strawberry.type
    class Query:
        @strawberry.field
        async def model(self, name: str) -> Model | None:
            return Model(name=name)

    class P(ParserCache):
        def __init__(self): super().__init__(maxsize=256)

    class V(ValidationCache):
        def __init__(self): super().__init__(maxsize=256)

    schema = strawberry.Schema(query=Query, extensions=[P, V])
    uvicorn.run(GraphQL(schema), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sequential(http: httpx.AsyncClient, body: dict[str, Any], n: int, pid: int) -> tuple[float, float]:
    """Median ms and server CPU ms per request over `n` requests, one at a time."""
    for _ in range(20):  # warm up (parser and validation caches, connections)
        await http.post("/graphql", json=body)
    times = []
    cpu0 = cpu_seconds(pid)
    for _ in range(n):
        started = time.perf_counter()
        resp = await http.post("/graphql", json=body)
        times.append(time.perf_counter() - started)
        assert resp.status_code == 200 and "errors" not in resp.json(), resp.text
    cpu = (cpu_seconds(pid) - cpu0) / n
    return statistics.median(times) * 1000, cpu * 1000


async def concurrent(base: str, make_body: Any, clients: int, seconds: float) -> float:
    """Requests per second with `clients` concurrent clients for `seconds`."""
    done = 0
    deadline = time.monotonic() + seconds

    async def client(i: int) -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            n = 0
            while time.monotonic() < deadline:
                resp = await http.post("/graphql", json=make_body(i, n))
                assert resp.status_code == 200 and "errors" not in resp.json(), resp.text
                n += 1
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return done / (time.monotonic() - started)


def register_body(name: str) -> dict[str, Any]:
    q = (
        'mutation($n: String!) { registerModel(input: {name: $n, projectName: "p", bucket: "bench", '
        'key: "m.bin"}) { __typename } }'
    )
    return {"query": q, "variables": {"n": name}}


async def fill(base: str, start: int, stop_at: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                resp = await http.post("/graphql", json=register_body(f"m{i:05d}"))
                assert resp.json()["data"]["registerModel"]["__typename"] == "ModelVersion", resp.text

        await asyncio.gather(*(one(i) for i in range(start, stop_at)))


def timed_direct(fn: Any, n: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def start_floor(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(port)])


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--names", default="2000,20000", help="registry sizes to measure at")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    sizes = [int(n) for n in args.names.split(",")]
    with tempfile.TemporaryDirectory(prefix="modelhub-api-bench-") as tmp:
        data = Path(tmp)
        (data / "objects" / BUCKET).mkdir(parents=True)
        (data / "objects" / BUCKET / "m.bin").write_bytes(b"weights")
        with EmbeddedMongo(data) as mongo:
            print(f"DB: embedded SecantusDB ({mongo.uri})")
            port, floor_port = free_port(), free_port()
            env = app_env(mongo.uri, str(data))
            app = start_app(env, port)
            floor = start_floor(floor_port)
            try:
                wait_http(f"http://127.0.0.1:{floor_port}/graphql")
                await measure(mongo.uri, f"http://127.0.0.1:{port}", app.pid, f"http://127.0.0.1:{floor_port}",
                              floor.pid, sizes, args)  # fmt: skip
            finally:
                stop(app)
                floor.terminate()
                floor.wait()


async def measure(
    uri: str, base: str, pid: int, floor: str, floor_pid: int, sizes: list[int], args: argparse.Namespace
) -> None:
    db = MongoClient(uri)["bench"]
    await fill(base, 0, 1)
    trivial = {"query": TRIVIAL}
    rows = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http, httpx.AsyncClient(base_url=floor) as fl:
        app_ms, app_cpu = await sequential(http, trivial, args.requests, pid)
        floor_ms, floor_cpu = await sequential(fl, trivial, args.requests, floor_pid)
    direct = timed_direct(lambda: db.models.find_one({"name": "m00000"}), args.requests)
    rows.append(("model(name) sequential: median ms", app_ms, floor_ms, direct))
    rows.append(("  ... server CPU ms per request", app_cpu, floor_cpu, None))
    app_rps = await concurrent(base, lambda i, n: trivial, 8, args.seconds)
    floor_rps = await concurrent(floor, lambda i, n: trivial, 8, args.seconds)
    rows.append(("model(name), 8 clients: req/s", app_rps, floor_rps, None))
    have = 1
    for size in sizes:
        await fill(base, have, size)
        have = size
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            times = []
            for i in range(50):
                started = time.perf_counter()
                await http.post("/graphql", json=register_body(f"seq{size}-{i}"))
                times.append(time.perf_counter() - started)
            prefix = {"query": PREFIX_QUERY}
            models_ms, _ = await sequential(http, prefix, 100, pid)
            newest_ms, _ = await sequential(http, {"query": NEWEST_QUERY}, 50, pid)
            by_name_ms, _ = await sequential(http, {"query": NAME_QUERY}, 10, pid)
        rps = await concurrent(base, lambda i, n, s=size: register_body(f"c{s}-{i}-{n}"), 16, args.seconds)
        have += 50 + int(rps * args.seconds)

        def models_direct() -> None:
            list(db.models.find({"name": {"$gte": "m01", "$lt": "m02"}}).sort([("name", 1)]).limit(51))

        def models_windowed() -> None:
            # The app's own reads: the name windows in turn until one holds a full page (db/paging.py).
            for bound in [*string_windows("m01", "m02"), "m02"]:
                flt = {"name": {"$gte": "m01", "$lt": bound}}
                if len(list(db.models.find(flt).sort([("name", 1)]).limit(51))) > 50:
                    break

        rows.append(
            (f"registerModel sequential @ {size}: median ms", statistics.median(times) * 1000, None, None)
        )
        rows.append((f"registerModel 16 clients @ {size}: /s", rps, None, None))
        rows.append(
            (
                f"models(first 50, prefix) @ {size}: median ms",
                models_ms,
                None,
                timed_direct(models_direct, 50),
            )
        )
        rows.append(
            ("  ... pymongo doing the app's name windows", timed_direct(models_windowed, 50), None, None)
        )
        rows.append(
            (
                f"models(first 50) newest first @ {size}: ms",
                newest_ms,
                None,
                timed_direct(lambda: list(db.models.find().sort(NEWEST_SORT).limit(51)), 10),
            )
        )
        rows.append(
            (
                f"models(first 50) by name, no prefix @ {size}: ms",
                by_name_ms,
                None,
                timed_direct(lambda: list(db.models.find().sort([("name", 1)]).limit(51)), 5),
            )
        )
    print(f"{'shape':48} {'app':>10} {'floor':>10} {'pymongo':>10}  app/floor  app/pymongo")
    for title, mine, fl, dr in rows:
        ratios = f"{mine / fl:9.2f}" if fl else " " * 9
        ratios += f"  {mine / dr:10.2f}" if dr else ""
        fmt = lambda v: f"{v:10.2f}" if v is not None else " " * 10  # noqa: E731
        print(f"{title:48} {fmt(mine)} {fmt(fl)} {fmt(dr)}  {ratios}")


if __name__ == "__main__":
    asyncio.run(main())
