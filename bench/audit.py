"""What the audit trail costs a mutation: sequential `updateModel` latency with the audit records written
(queued on the request path, inserted by the instance's writer task) against the same with recording
switched off, and the writer's own insert rate.

Usage: python -m bench.audit [--requests 400] [--rounds 3]

In-process (httpx's ASGI transport, so no socket or uvicorn time), on an embedded SecantusDB started for the
run. Rounds alternate the two modes so that a busy machine slows both alike; the medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from graphql_api.app import create_app
from graphql_api.config import Settings
from graphql_api.db import audit as audit_db
from graphql_api.documents import AuditEvent, AuditKind
from graphql_api.embedded import EmbeddedMongo

UPDATE = 'mutation { updateModel(input: {name: "bench-model", tags: ["t"]}) { __typename } }'


async def _latencies(http: httpx.AsyncClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        resp = await http.post("/graphql", json={"query": UPDATE}, headers={"x-engineer-id": "bench"})
        out.append(time.perf_counter() - started)
        assert resp.status_code == 200 and "errors" not in resp.json(), resp.text
    return out


async def run(uri: str, data_dir: Path, requests: int, rounds: int) -> None:
    settings = Settings(
        mongo_uri=uri, mongo_db="bench_audit", data_dir=data_dir, auth="header", rate_limit_per_minute=10**9,
        rate_limit_burst=10**9, signing_secret="bench-secret-of-at-least-32-characters",
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        (data_dir / "objects" / "b").mkdir(parents=True, exist_ok=True)
        (data_dir / "objects" / "b" / "m.bin").write_bytes(b"weights")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as http:
            register = """mutation { registerModel(input: {name: "bench-model", projectName: "p", bucket: "b",
                          key: "m.bin"}) { __typename } }"""
            await http.post("/graphql", json={"query": register}, headers={"x-engineer-id": "bench"})
            await _latencies(http, 50)  # warm up
            on: list[float] = []
            off: list[float] = []
            record = services.audit.record
            for _ in range(rounds):
                services.audit.record = record
                on += await _latencies(http, requests)
                await services.audit.flush()
                services.audit.record = lambda *a, **k: None
                off += await _latencies(http, requests)
            services.audit.record = record

            def ms(values: list[float], q: float) -> float:
                return statistics.quantiles(values, n=100)[int(q) - 1] * 1000

            print(f"updateModel, {len(on)} sequential requests per mode ({rounds} alternating rounds):")
            for name, values in (("audit on ", on), ("audit off", off)):
                print(
                    f"  {name}: median {statistics.median(values) * 1000:.2f} ms, p95 {ms(values, 95):.2f} ms"
                )
            print(
                f"  difference of medians: {(statistics.median(on) - statistics.median(off)) * 1000:+.2f} ms"
            )

        batch = [
            AuditEvent(kind=AuditKind.MUTATION, action="bench", outcome="OK", transport="http")
            for _ in range(2000)
        ]
        started = time.perf_counter()
        for i in range(0, len(batch), 200):
            await audit_db.insert_many(batch[i : i + 200])
        rate = len(batch) / (time.perf_counter() - started)
        print(f"writer inserts (batches of 200): {rate:,.0f} records/s")


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        mongo = EmbeddedMongo(Path(tmp))
        uri = mongo.start()
        try:
            asyncio.run(run(uri, Path(tmp) / "data", args.requests, args.rounds))
        finally:
            mongo.stop()


if __name__ == "__main__":
    main()
