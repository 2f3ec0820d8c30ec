"""registerModel throughput as the registry grows, with the DB's and the app's CPU per registration.

Usage: python -m bench.registration [--names 20000] [--step 2000] [--clients 16]

Starts the embedded SecantusDB and `modelhub serve` (header mode, one worker, local store), registers
`--names` new models with `--clients` concurrent clients in steps of `--step`, and prints per step:
registrations per second, the app's and the DB's CPU ms per registration, and how many versions still wait
for the checksum verifier (PENDING). Flat figures from the first step to the last mean registration does not
slow as names accumulate. With `--drain`, then the verifier's rate clearing the backlog with no other load.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench._common import app_env, free_port, start_app, stop
from bench.api import cpu_seconds, register_body
from graphql_api.embedded import EmbeddedMongo


async def fill(base: str, start: int, end: int, clients: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        gate = asyncio.Semaphore(clients)

        async def one(i: int) -> None:
            async with gate:
                resp = await http.post("/graphql", json=register_body(f"m{i:05d}"))
                assert resp.json()["data"]["registerModel"]["__typename"] == "ModelVersion", resp.text

        await asyncio.gather(*(one(i) for i in range(start, end)))


async def drain(versions: Any) -> None:
    """Waits for the verifier to hash every PENDING version (no other load) and prints its rate."""
    left = started_with = versions.count_documents({"checksum_status": "PENDING"})
    began = time.perf_counter()
    while left:
        await asyncio.sleep(5)
        left = versions.count_documents({"checksum_status": "PENDING"})
        elapsed = time.perf_counter() - began
        print(f"  drain: {started_with - left:,} of {started_with:,} verified in {elapsed:.0f} s "
              f"({(started_with - left) / elapsed:.1f}/s)")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--names", type=int, default=20_000)
    parser.add_argument("--step", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--drain", action="store_true", help="then time the checksum verifier clearing the PENDING backlog"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelhub-registration-") as tmp:
        data = Path(tmp)
        (data / "objects" / "bench").mkdir(parents=True)
        (data / "objects" / "bench" / "m.bin").write_bytes(b"weights")
        with EmbeddedMongo(data) as mongo:
            print(f"DB: embedded SecantusDB ({mongo.uri}); {args.clients} clients")
            port = free_port()
            env = app_env(mongo.uri, tmp)
            app = start_app(env, port)
            versions = MongoClient(mongo.uri)["bench"]["model_versions"]
            db_pid = mongo.pid
            assert db_pid is not None
            try:
                for start in range(0, args.names, args.step):
                    end = min(start + args.step, args.names)
                    cpu0, db0, began = cpu_seconds(app.pid), cpu_seconds(db_pid), time.perf_counter()
                    await fill(f"http://127.0.0.1:{port}", start, end, args.clients)
                    seconds = time.perf_counter() - began
                    app_ms = (cpu_seconds(app.pid) - cpu0) / (end - start) * 1000
                    db_ms = (cpu_seconds(db_pid) - db0) / (end - start) * 1000
                    pending = versions.count_documents({"checksum_status": "PENDING"})
                    print(f"{end:>7,} names: {(end - start) / seconds:6.1f}/s   app CPU {app_ms:5.1f} ms   "
                          f"DB CPU {db_ms:5.1f} ms per registration   {pending:,} PENDING")  # fmt: skip
                if args.drain:
                    await drain(versions)
            finally:
                stop(app)


if __name__ == "__main__":
    asyncio.run(main())
