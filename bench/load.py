"""Mixed load against `modelhub serve --workers N`: queries, registrations and streamed downloads.

Usage: python -m bench.load [--clients 50] [--seconds 60] [--workers 2] [--artifact-kib 1024]

Starts the embedded SecantusDB and `modelhub serve` (header mode, rate limit off) as child processes. Each of
the clients loops for the given time over a weighted mix: 60 % queries (a model by name, a page of models,
downloadStats for the last day), 15 % registrations (a new version of one of the client's own models), 25 %
one-step streamed downloads of an artifact (read to the end). Prints throughput, p50/p95/p99 per kind,
errors by kind, and checks afterwards that the COMPLETED download events equal the completed downloads the
clients saw (and that no download is left IN_PROGRESS). The DB is named in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from pymongo import MongoClient

from bench._common import free_port, percentile, start_app, stop, wait_http
from graphql_api.embedded import EmbeddedMongo

BUCKET = "load"
QUERIES = [
    '{ model(name: "load-0-0") { name latestVersion { version } } }',
    "{ models(first: 20) { nodes { name } } }",
    '{ downloadStats(groupBy: [MODEL], interval: HOUR, filter: {since: "%(since)s"}) '
    "{ totalRows rows { modelName periodStart downloads } } }",
]
REGISTER = (
    "mutation($i: RegisterModelInput!) { registerModel(input: $i) { __typename ... on UserError { code } } }"
)


async def client(
    base: str, index: int, until: float, size: int, stats: dict[str, list[float]], errors: Counter[str],
    done: Counter[str], since: str,
) -> None:  # fmt: skip
    who = {"X-Engineer-ID": f"loader-{index}"}
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=who) as http:
        while time.monotonic() < until:
            roll = rng.random()
            started = time.perf_counter()
            try:
                if roll < 0.60:
                    kind = "query"
                    query = rng.choice(QUERIES).replace("%(since)s", since)
                    body = (await http.post("/graphql", json={"query": query})).json()
                    if body.get("errors"):
                        errors[f"query:{body['errors'][0].get('extensions', {}).get('code')}"] += 1
                        continue
                elif roll < 0.75:
                    kind = "register"
                    name = f"load-{index}-{rng.randrange(3)}"
                    variables = {"i": {"name": name, "projectName": "load", "bucket": BUCKET, "key": "m.bin"}}
                    body = (
                        await http.post("/graphql", json={"query": REGISTER, "variables": variables})
                    ).json()
                    result = (body.get("data") or {}).get("registerModel") or {}
                    if result.get("__typename") != "ModelVersion":
                        errors[f"register:{result.get('code') or body.get('errors')}"] += 1
                        continue
                else:
                    kind = "download"
                    name = f"load-{rng.randrange(max(1, index + 1))}-0"
                    received = 0
                    async with http.stream("GET", f"/models/{name}/download") as resp:
                        if resp.status_code == 404:
                            continue  # that client has not registered it yet
                        if resp.status_code != 200:
                            errors[f"download:{resp.status_code}"] += 1
                            continue
                        done["download_started"] += 1
                        async for chunk in resp.aiter_bytes():
                            received += len(chunk)
                    if received != size:
                        errors["download:short"] += 1
                        continue
                    done["download_completed"] += 1
            except httpx.HTTPError as exc:
                errors[f"http:{type(exc).__name__}"] += 1
                continue
            stats[kind].append(time.perf_counter() - started)
            done[kind] += 1


async def run(args: argparse.Namespace) -> None:
    size = args.artifact_kib * 1024
    with tempfile.TemporaryDirectory(prefix="modelhub-load-") as tmp:
        data = Path(tmp)
        (data / "objects" / BUCKET).mkdir(parents=True)
        (data / "objects" / BUCKET / "m.bin").write_bytes(random.randbytes(size))
        with EmbeddedMongo(data) as mongo:
            print(f"DB: embedded SecantusDB ({mongo.uri}); {args.workers} workers, {args.clients} clients, "
                  f"{args.seconds:g} s, artifact {args.artifact_kib} KiB")  # fmt: skip
            port = free_port()
            env = {"MODELHUB_MONGO_URI": mongo.uri, "MODELHUB_DATA_DIR": str(data), "MODELHUB_AUTH": "header",
                   "MODELHUB_MONGO_DB": "load", "MODELHUB_RATE_LIMIT_PER_MINUTE": "0"}  # fmt: skip
            app = start_app(env, port, workers=args.workers)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_http(f"{base}/readyz")
                stats: dict[str, list[float]] = defaultdict(list)
                errors: Counter[str] = Counter()
                done: Counter[str] = Counter()
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
                until = time.monotonic() + args.seconds
                started = time.monotonic()
                await asyncio.gather(
                    *(client(base, i, until, size, stats, errors, done, since) for i in range(args.clients))
                )
                elapsed = time.monotonic() - started
                await asyncio.sleep(2)  # outcomes are recorded just after the last byte
            finally:
                stop(app)
            total = sum(len(v) for v in stats.values())
            print(f"throughput: {total / elapsed:,.1f} ok requests/s over {elapsed:.1f} s "
                  f"({sum(errors.values())} errors)")  # fmt: skip
            print(f"{'kind':<10}{'ok':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
            for kind in ("query", "register", "download"):
                values = stats.get(kind, [])
                print(f"{kind:<10}{len(values):>8}{len(values) / elapsed:>9.1f}"
                      f"{percentile(values, 0.5) * 1000:>9.1f}{percentile(values, 0.95) * 1000:>9.1f}"
                      f"{percentile(values, 0.99) * 1000:>9.1f}")  # fmt: skip
            if stats.get("download"):
                print(
                    f"download median: {size / statistics.median(stats['download']) / 2**20:,.1f} MiB/s each"
                )
            for kind, n in errors.most_common():
                print(f"error {kind}: {n}")
            with MongoClient(mongo.uri, tz_aware=True) as direct:
                events = direct["load"].download_events
                completed = events.count_documents({"status": "COMPLETED"})
                open_ = events.count_documents({"status": {"$in": ["IN_PROGRESS", "ISSUED"]}})
                by_status = {
                    r["_id"]: r["n"]
                    for r in events.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
                }
            seen = done["download_completed"]
            verdict = "OK" if completed == seen and open_ == 0 else "MISMATCH"
            print(f"events by status: {by_status}")
            print(f"check: COMPLETED events {completed} vs completed downloads seen {seen} "
                  f"(started {done['download_started']}), open {open_}: {verdict}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--artifact-kib", type=int, default=1024)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
