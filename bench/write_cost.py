"""Times the rollup writes of each download stage: recorded (started), finished, and verification reported.

Since the roller (analytics/roller.py) these writes are no longer on the request path: the roller folds the
same updates, one per bucket per interval for all the downloads of that interval.

Usage: python -m bench.write_cost [--downloads 300]

It starts an embedded SecantusDB in a temporary directory, builds demo downloads (seed-demo's generator)
and, one download at a time as the synchronous path did, inserts the event and times `record_started`, then
marks it finished and times `record_finished`, then (where the code has it) `record_verification`.
Prints the median and p95 of each stage in milliseconds. Run it from another checkout
(PYTHONPATH=that checkout) for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graphql_api import demo
from graphql_api.analytics import rollups
from graphql_api.db import connect
from graphql_api.db import events as events_db
from graphql_api.documents import DownloadStatus


async def _timed(samples: list[float], step: Callable[[], Awaitable[Any]]) -> None:
    start = time.perf_counter()
    await step()
    samples.append((time.perf_counter() - start) * 1000)


async def run(uri: str, downloads: int) -> dict[str, list[float]]:
    stages: dict[str, list[float]] = {"recorded": [], "finished": [], "verified": []}
    async with connect(uri, "bench_write_cost"):
        rng = random.Random(5)
        now = datetime.now(UTC)
        models = demo.build_models(20, rng, now)
        events = demo.build_events(models, downloads, 7, rng, now)
        verify = getattr(rollups, "record_verification", None)
        for event in events:
            status, sent, duration = event.status, event.bytes_sent, event.duration_seconds
            event.status, event.bytes_sent, event.duration_seconds = DownloadStatus.ISSUED, 0, None
            await events_db.EventWrites().insert(event)
            await _timed(stages["recorded"], lambda e=event: rollups.record_started(e))
            if status is DownloadStatus.ISSUED:
                continue
            event.status, event.bytes_sent, event.duration_seconds = status, sent, duration
            await _timed(stages["finished"], lambda e=event: rollups.record_finished(e))
            if verify is not None and status is DownloadStatus.COMPLETED:
                event.sha256_matches = True
                await _timed(stages["verified"], lambda e=event: verify(e))
    return stages


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--downloads", type=int, default=300)
    args = parser.parse_args()
    from graphql_api.embedded import EmbeddedMongo

    with tempfile.TemporaryDirectory(prefix="modelhub-write-cost-") as tmp, EmbeddedMongo(Path(tmp)) as mongo:
        stages = asyncio.run(run(mongo.uri, args.downloads))
    for name, samples in stages.items():
        if not samples:
            print(f"{name:>9}: not in this code")
            continue
        p95 = statistics.quantiles(samples, n=20)[-1] if len(samples) > 1 else samples[0]
        median = statistics.median(samples)
        print(f"{name:>9}: n={len(samples):4}  median {median:6.2f} ms  p95 {p95:6.2f} ms")


if __name__ == "__main__":
    main()
