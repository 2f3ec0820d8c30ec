"""How a download ends: the one place it reaches a terminal state (with the resume chain it completes),
its heartbeats, and the sweeper of downloads whose process died."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pymongo
from pymongo.errors import PyMongoError

from .db import events as events_db
from .documents import DownloadEvent, DownloadStatus, utcnow
from .services import Services

log = logging.getLogger("modelhub.downloads")


async def finish(
    services: Services,
    event: DownloadEvent,
    status: DownloadStatus,
    bytes_sent: int,
    error: str | None = None,
    *,
    finished_at: datetime | None = None,
) -> None:
    """The one place a download reaches a terminal state: the event (with the rollup stage that the roller
    folds) and the metrics."""
    finished = finished_at or utcnow()
    started = event.transfer_started_at
    duration = (finished - started).total_seconds() if started else None
    update = {"bytes_sent": bytes_sent, "finished_at": finished, "duration_seconds": duration, "error": error}
    transition = uuid.uuid4().hex

    chain: dict[str, Any] = {}

    async def write() -> bool:
        chain.update(await _chain_fields(event, status))
        change = events_db.EventFinish(event.id, status, update | chain, transition, staged=utcnow())
        return await services.events.finish(change)

    if not await _until_written(write):
        return  # already finished (e.g. swept): never count it twice
    metrics = services.metrics
    mode = event.mode.value
    counter = {
        DownloadStatus.COMPLETED: metrics.downloads_completed,
        DownloadStatus.ABORTED: metrics.downloads_aborted,
        DownloadStatus.FAILED: metrics.downloads_failed,
    }[status]
    counter.labels(mode).inc()
    metrics.download_bytes.labels(mode).inc(bytes_sent)
    if duration is not None:
        metrics.download_duration.labels(mode, status.value).observe(duration)
    if chain["completes"]:
        metrics.model_downloads.labels(metrics.model_label(event.model_name)).inc()


async def _chain_fields(event: DownloadEvent, status: DownloadStatus) -> dict[str, Any]:
    """Whether this event completes a download: it sent through the object's last byte, and its bytes
    start at 0 or continue (without a gap) a chain of the same requester's downloads that does."""
    start = event.range_start or 0
    end = event.range_end if event.range_end is not None else event.size_bytes - 1
    chain_start = start
    if start > 0 and event.resumes is not None:
        earlier = await events_db.get(event.resumes)
        if earlier is not None and not earlier.completes and earlier.engineer == event.engineer:
            earlier_start = earlier.chain_start
            if earlier_start is None and earlier.resumes is None:
                earlier_start = earlier.range_start or 0
            if earlier_start is not None and (earlier.range_start or 0) + earlier.bytes_sent >= start:
                chain_start = earlier_start
    completes = status is DownloadStatus.COMPLETED and chain_start == 0 and end >= event.size_bytes - 1
    return {"chain_start": chain_start, "completes": completes}


# How long a finished download keeps trying to record its outcome while the database is out.
FINISH_RETRY_SECONDS = 45.0
ATTEMPT_SECONDS = 5.0


async def _until_written(write: Callable[[], Awaitable[bool]], seconds: float = FINISH_RETRY_SECONDS) -> bool:
    """Runs an idempotent write until it gets through, for up to `seconds` of database outage: a download
    that ends during a stall is still recorded once the database answers (each attempt carries the same
    transition id, so one whose acknowledgement was lost is recognised, not repeated)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pause = 0.25
    while True:
        try:
            with pymongo.timeout(ATTEMPT_SECONDS):
                return await write()
        except PyMongoError as exc:
            if loop.time() + pause > deadline:
                raise
            log.warning(
                "recording a download outcome failed (%s); retrying in %.2g s", type(exc).__name__, pause
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 4.0)


async def record_progress(event: DownloadEvent, sent: int) -> None:
    """A heartbeat; while the database is out it is skipped (the next one, or the finish, catches up)."""
    try:
        with pymongo.timeout(ATTEMPT_SECONDS):
            await events_db.record_progress(event.id, sent, utcnow())
    except PyMongoError as exc:
        log.warning("a download heartbeat was not recorded (%s)", type(exc).__name__)


async def sweep_stale(services: Services, older_than_seconds: float) -> int:
    """Marks IN_PROGRESS events whose heartbeat stopped (their process died) as ABORTED."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    count = 0
    async for event in events_db.stale(cutoff):
        # Finished at the last moment it was known to be alive.
        reason = "the serving process stopped"
        await finish(
            services, event, DownloadStatus.ABORTED, event.bytes_sent, reason, finished_at=event.heartbeat_at
        )
        count += 1
    if count:
        log.warning("swept %d stale in-progress downloads to ABORTED", count)
    return count
