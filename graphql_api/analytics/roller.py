"""The roller: folds the rollup stages that downloads stamp on their events into the rollup buckets, off the
request path.

A download's writes stamp what it owes the rollups on its own event (`stages.recorded|finished|verified`
and `staged_at`, see DownloadEvent) instead of updating the buckets every concurrent download of the same
model updates. Each worker process runs a `Roller`; only the holder of the lease (db/rollup_state.py)
folds. Every MODELHUB_ROLLUP_INTERVAL_SECONDS it reads the stages staged in (watermark, now - lag]
(MODELHUB_ROLLUP_LAG_SECONDS: clock skew between instances, writes still in flight), sums them per bucket in
memory and applies one update per bucket per grain, then moves the watermark.

Neither lost nor doubled across a crash: the fold's target is recorded before any bucket is written
(`applying`); each bucket update also sets the bucket's `rolled_to` to the target and applies only to a
bucket rolled to an earlier one; the watermark moves last. A fold that died is finished to the same target
by the next holder, skipping the buckets already written.

Readers stay exact by adding the stages staged after the watermark to the buckets that do not hold them yet
(`rollups.pending`, db/rollups/pending.py `split`). Limits: a stage whose write lands in the database more
than the lag after its own timestamp is missed by the rollups (raw events still have it) until
`rebuild-rollups`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from ..db import migrations, rollup_state
from ..db import rollups as rollups_db
from ..db.rollups import GRAINS, RollupBucket, RollupDelta, Staged
from ..documents import DownloadEvent, utcnow
from ..health import pause
from ..metrics import Metrics
from . import rollups

log = logging.getLogger("modelhub.roller")


async def _apply(stages: list[Staged], target: datetime) -> int:
    """Sums `stages` per bucket of every grain and writes each bucket once for `target`."""
    deltas: dict[RollupBucket, RollupDelta] = {}
    for stage in stages:
        for grain in GRAINS:
            deltas.setdefault(RollupBucket.of_doc(stage.doc, grain), RollupDelta()).add(stage.delta)
    return await rollups_db.fold(deltas, target)


async def fold(
    holder: str, lag_seconds: float, metrics: Metrics | None = None, now: datetime | None = None
) -> int:
    """One fold by `holder` (who must hold the lease): first the end of a fold that died, then the stages
    staged in (watermark, now - lag] (`now`: this clock's, unless given). Returns how many stages it
    folded."""
    state = await rollup_state.read()
    folded = 0
    if state.applying is not None:  # a fold that died between its buckets and its watermark
        log.warning("finishing an interrupted rollup fold to %s", state.applying.isoformat())
        stages = await rollups.staged_between(state.watermark, state.applying)
        await _apply(stages, state.applying)
        await rollup_state.advance(state.watermark, state.applying, state.applying)
        folded += _count(stages, metrics)
        state = await rollup_state.read()
    target = (now or utcnow()) - timedelta(seconds=lag_seconds)
    if target <= state.watermark or state.applying is not None:
        return folded
    stages = await rollups.staged_between(state.watermark, target)
    if not stages:
        await rollup_state.advance(state.watermark, target, None, holder=holder)
        return folded
    if not await rollup_state.begin(holder, state.watermark, target):
        return folded  # the lease or the watermark changed meanwhile
    await _apply(stages, target)
    await rollup_state.advance(state.watermark, target, target)
    return folded + _count(stages, metrics)


def _count(stages: list[Staged], metrics: Metrics | None) -> int:
    if metrics is not None:
        for stage in stages:
            metrics.rollup_stages_folded.labels(stage.stage).inc()
    return len(stages)


class Roller:
    """A worker's roller: every interval, takes or renews the lease and, holding it, folds; every worker
    sets the lag gauge from the shared watermark."""

    def __init__(
        self,
        metrics: Metrics | None,
        interval_seconds: float,
        lag_seconds: float,
        lease_seconds: float,
        holder: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.interval = interval_seconds
        self.lag = lag_seconds
        self.lease = lease_seconds
        self.holder = holder or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    async def step(self) -> int:
        """One interval's work: the stages folded (0 when another process holds the lease)."""
        folded = 0
        if await rollup_state.acquire(self.holder, self.lease):
            folded = await fold(self.holder, self.lag, self.metrics)
        else:
            await rollup_state.release(self.holder)  # someone wants it next (rebuild-rollups)
        if self.metrics is not None:
            mark = await rollup_state.watermark()
            self.metrics.rollup_lag.set(max(0.0, (utcnow() - mark).total_seconds()))
        return folded

    async def run(self, stopped: asyncio.Event) -> None:
        await rollup_state.ensure()
        while not stopped.is_set():
            try:
                await self.step()
            except Exception:  # retried next interval; it must not kill the app
                log.exception("folding download stages into the rollups failed")
            await pause(stopped, self.interval)
        with contextlib.suppress(Exception):
            await rollup_state.release(self.holder)


@contextlib.asynccontextmanager
async def holding_lease(holder: str, lease_seconds: float, wait_seconds: float) -> AsyncIterator[None]:
    """Holds the roller's lease for a while (the rollers of running servers give it up after their current
    fold and do not take it back meanwhile); renewed in the background; TimeoutError when it could not be
    had within `wait_seconds` (a holder that died is replaced once its lease expires)."""
    await rollup_state.ensure()
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        await rollup_state.want(holder, lease_seconds)
        if await rollup_state.acquire(holder, lease_seconds, wanting=True):
            break
        if asyncio.get_running_loop().time() > deadline:
            await rollup_state.unwant(holder)
            raise TimeoutError("the rollup lease was not released in time")
        await asyncio.sleep(min(0.2, lease_seconds / 4))

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            await rollup_state.want(holder, lease_seconds)
            await rollup_state.acquire(holder, lease_seconds, wanting=True)

    renewer = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await rollup_state.unwant(holder)
        await rollup_state.release(holder)


async def fill_totals(lag_seconds: float, lease_seconds: float, wait_seconds: float = 3600.0) -> int:
    """Migration 7 (db/migrations.py `fill_model_totals`), once: holding the lease, folds (so no fold is
    left half applied and nobody writes a bucket meanwhile), then fills the totals. A process starting
    meanwhile waits for the lease, then finds it done. Returns the buckets written (0 once done)."""
    db = DownloadEvent.get_pymongo_collection().database
    if await migrations.model_totals_done(db):
        return 0
    holder = f"totals-{uuid.uuid4().hex[:8]}"
    async with holding_lease(holder, lease_seconds, wait_seconds):
        await fold(holder, lag_seconds)
        return await migrations.fill_model_totals(db)


async def rebuild_rollups(
    since: datetime | None = None,
    batch: int = 10_000,
    horizon: datetime | None = None,
    lag_seconds: float = 10.0,
    lease_seconds: float = 15.0,
) -> int:
    """Recomputes the buckets from the raw events (all days, or the days from `since` on), holding the
    roller's lease meanwhile: it folds up to now - lag, then rebuilds the days from every event's stages up
    to that watermark (the roller folds the later ones once it has the lease back). Downloads finishing
    meanwhile are counted once. Readers may see the days being rebuilt half done while it runs. Returns the
    number of buckets written."""
    holder = f"rebuild-{uuid.uuid4().hex[:8]}"
    async with holding_lease(holder, lease_seconds, wait_seconds=3 * lease_seconds):
        await fold(holder, lag_seconds)
        # The totals of the days it does not rebuild, when this database has none yet (migration 7).
        await migrations.fill_model_totals(DownloadEvent.get_pymongo_collection().database)
        state = await rollup_state.read()
        return await rollups.rebuild_from_events(since, batch, horizon, upto=state.watermark)
