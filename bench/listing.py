"""First pages of `models` at growing registry sizes, on the embedded SecantusDB.

Usage: python -m bench.listing [--names 2000,20000] [--spread-seconds 7776000]

Inserts models straight into the DB (no verifier backlog, no registration load), their creation dates spread
uniformly over the last `--spread-seconds` (90 days by default; 300 is a burst of registrations), starts
`modelhub serve` (header mode, one worker) and prints the median of `--requests` (15) rounds of one request
per shape: newest first (the default order), recently updated, by name without a prefix, by name under a
prefix, two prefixes of which one matches 10x more names (m000: 100, m00: 1,000 at 1,000 models and more),
newest first and by name, and one of two projects (half the models) newest first and by name; at the first
size, the versions of a model with 100 and one with 5,000 versions (every tenth archived), by number and by
date. The app answers catalogue pages from memory (catalogue.py) once it has read the inserted models: the
script waits 5 s for that.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pymongo import MongoClient

from bench._common import app_env, free_port, start_app, stop
from graphql_api.embedded import EmbeddedMongo

PAGE = "{ models(first: 50%s) { nodes { name } } }"
SHAPES = {
    "newest first (default)": PAGE % "",
    "updated, newest first": PAGE % ", orderBy: {field: UPDATED_AT, direction: DESC}",
    "by name, no prefix": PAGE % ", orderBy: {field: NAME, direction: ASC}",
    "by name, prefix m01": PAGE % ', filter: {namePrefix: "m01"}, orderBy: {field: NAME, direction: ASC}',
    "prefix m000 (100 match)": PAGE % ', filter: {namePrefix: "m000"}',
    "prefix m00 (10x more)": PAGE % ', filter: {namePrefix: "m00"}',
    "prefix m000, by name": PAGE % ', filter: {namePrefix: "m000"}, orderBy: {field: NAME, direction: ASC}',
    "prefix m00, by name": PAGE % ', filter: {namePrefix: "m00"}, orderBy: {field: NAME, direction: ASC}',
    "project q, newest first": PAGE % ', filter: {projectNames: ["q"]}',
    "project q, by name": PAGE % ', filter: {projectNames: ["q"]}, orderBy: {field: NAME, direction: ASC}',
}
VERSIONS = '{ model(name: "%s") { versions(first: 50%s) { nodes { version } } } }'
VERSION_SHAPES = {
    "versions of v-few (100)": VERSIONS % ("v-few", ""),
    "versions of v-many (5,000)": VERSIONS % ("v-many", ""),
    "v-few by date": VERSIONS % ("v-few", ", orderBy: {field: CREATED_AT, direction: DESC}"),
    "v-many by date": VERSIONS % ("v-many", ", orderBy: {field: CREATED_AT, direction: DESC}"),
}


def version_docs(name: str, count: int, now: datetime) -> list[dict[str, object]]:
    """`count` versions of `name`, one a minute up to now; every tenth archived."""
    return [{"name": name, "project_name": "v", "owner": "o", "description": None, "tags": [], "metadata": {},
             "version": v, "bucket": "b", "key": f"{name}/{v}", "size_bytes": 1, "etag": "e",
             "content_type": "application/octet-stream", "archived": v % 10 == 0,
             "created_at": now - timedelta(minutes=count - v), "checksum_status": "VERIFIED"}
            for v in range(1, count + 1)]  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--names", default="2000,20000", help="registry sizes to measure at")
    parser.add_argument("--spread-seconds", type=float, default=90 * 86400)
    parser.add_argument("--requests", type=int, default=15, help="timed requests per shape (the median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelhub-listing-") as tmp, EmbeddedMongo(Path(tmp)) as mongo:
        print(f"DB: embedded SecantusDB ({mongo.uri}); creation dates over {args.spread_seconds:,.0f} s")
        port = free_port()
        env = app_env(mongo.uri, tmp)
        app = start_app(env, port)
        models = MongoClient(mongo.uri)["bench"]["models"]
        have, now = 0, datetime.now(UTC)
        versions = MongoClient(mongo.uri)["bench"]["model_versions"]
        for name, count in (("v-few", 100), ("v-many", 5000)):
            models.insert_one({"name": name, "project_name": "v", "owner": "o", "description": None,
                               "tags": [], "metadata": {}, "aliases": {}, "alias_moves": 0,
                               "created_at": now, "updated_at": now})  # fmt: skip
            versions.insert_many(version_docs(name, count, now))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
                sizes = [int(n) for n in args.names.split(",")]
                first_size = sizes[0]
                for size in sizes:
                    docs = []
                    for i in range(have, size):
                        at = now - timedelta(seconds=random.Random(i).uniform(0, args.spread_seconds))
                        docs.append({"name": f"m{i:05d}", "project_name": "pq"[i % 2], "owner": "o",
                                     "description": None, "tags": [], "metadata": {}, "aliases": {},
                                     "alias_moves": 0, "created_at": at, "updated_at": at})  # fmt: skip
                    for start in range(0, len(docs), 2000):
                        models.insert_many(docs[start : start + 2000])
                    have = size
                    # The app's catalogue reads the new models in a task of its own, started by a page
                    # request; pages come from the DB until it has (a few seconds at 20,000).
                    settle_until = time.monotonic() + 5
                    while time.monotonic() < settle_until:
                        await http.post("/graphql", json={"query": PAGE % ""})
                        await asyncio.sleep(0.2)
                    await measure(http, size, SHAPES, args.requests)
                    if size == first_size:  # on their own: a slow shape slows the next request down
                        await measure(http, size, VERSION_SHAPES, args.requests)
        finally:
            stop(app)


async def measure(http: httpx.AsyncClient, size: int, shapes: dict[str, str], rounds: int) -> None:
    """Prints each shape's median over `rounds` rounds of one request per shape (round robin, so that
    shapes share the machine's noise)."""
    for query in shapes.values():
        for _ in range(3):  # warm up
            resp = await http.post("/graphql", json={"query": query})
            assert "errors" not in resp.json(), resp.text
    times: dict[str, list[float]] = {title: [] for title in shapes}
    for _ in range(rounds):
        for title, query in shapes.items():
            started = time.perf_counter()
            await http.post("/graphql", json={"query": query})
            times[title].append(time.perf_counter() - started)
    for title, taken in times.items():
        print(f"{size:>7,} models  {title:26} {statistics.median(taken) * 1000:8.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
