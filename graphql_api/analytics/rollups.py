"""The rollup write path: what each event adds to its day's bucket, live or in bulk, and the rebuild."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from ..db import events as events_db
from ..db import rollups as rollups_db
from ..db.rollups import GRAINS, RollupBucket, RollupDelta
from ..documents import TERMINAL_STATUSES, DownloadEvent, DownloadMode, DownloadStatus
from ..queries import EventQuery, day_of
from .histograms import duration_bucket, throughput_bucket


class Outcome(Protocol):
    """What `delta_of` reads of an event: a DownloadEvent, or a lighter record of its stored fields."""

    @property
    def engineer(self) -> str: ...
    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> int: ...
    @property
    def status(self) -> DownloadStatus: ...
    @property
    def completes(self) -> bool: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def duration_seconds(self) -> float | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def sha256_matches(self) -> bool | None: ...


def delta_of(event: Outcome, *, started: bool, finished: bool) -> RollupDelta:
    """What `event` adds to its bucket when it is recorded (`started`) and when it ends (`finished`); with
    both (a whole event at once: bulk loads, rebuilds, raw edges) its reported verification too, which the
    live path adds when it is reported (`record_verification`: it may come before the finish is written)."""
    delta = RollupDelta()
    if started and finished and event.sha256_matches is not None:
        delta.verified, delta.mismatched = (1, 0) if event.sha256_matches else (0, 1)
    if started:
        delta.downloads = 1
        delta.engineers = {event.engineer}
        delta.pairs = {(event.engineer, event.model_name, event.model_version)}
    if finished and event.status in TERMINAL_STATUSES:
        # `completed` counts completed downloads (the event that completes one), not COMPLETED transfers:
        # a Range peek or the first leg of a resumed download is a download request, not a download.
        if event.status is not DownloadStatus.COMPLETED:
            setattr(delta, event.status.value.lower(), 1)
        elif event.completes:
            delta.completed = 1
        delta.bytes_sent = event.bytes_sent
        if event.duration_seconds is not None:
            delta.duration_count = 1
            delta.duration_sum = event.duration_seconds
            delta.duration_hist = {duration_bucket(event.duration_seconds): 1}
            delta.duration_max = event.duration_seconds
            if event.duration_seconds > 0 and event.bytes_sent > 0:
                delta.throughput_hist = {throughput_bucket(event.bytes_sent / event.duration_seconds): 1}
        if event.completes and event.finished_at is not None:
            delta.last_completed_at = event.finished_at
    return delta


async def _bump_all(event: DownloadEvent, delta: RollupDelta) -> None:
    # The day's and the hour's bucket, side by side: one round trip of latency for both.
    await rollups_db.bump_each([RollupBucket.of(event, grain) for grain in GRAINS], delta)


async def record_started(event: DownloadEvent) -> None:
    """Counts a new download (any mode) in its day's and hour's buckets, at the moment it is recorded."""
    await _bump_all(event, delta_of(event, started=True, finished=False))


async def record_finished(event: DownloadEvent) -> None:
    """Adds a terminal download's outcome, bytes and duration to its day's and hour's buckets."""
    await _bump_all(event, delta_of(event, started=False, finished=True))


async def record_verification(event: DownloadEvent) -> None:
    """Counts a download's reported verification in its day's and hour's buckets (once: the report is)."""
    matches = event.sha256_matches
    await _bump_all(event, RollupDelta(verified=int(matches is True), mismatched=int(matches is False)))


class RollupBuilder:
    """The bucket increments of many events, summed in memory and written in bulk (bulk loads, rebuilds).

    It applies exactly what `record_started` and `record_finished` apply one event at a time.
    """

    def __init__(self) -> None:
        self._deltas: dict[RollupBucket, RollupDelta] = {}

    def add(self, event: DownloadEvent) -> None:
        if not isinstance(event.status, DownloadStatus):  # built with model_construct from raw documents
            event.status = DownloadStatus(event.status)
            event.mode = DownloadMode(event.mode)
        delta = delta_of(event, started=True, finished=True)
        for grain in GRAINS:
            self._deltas.setdefault(RollupBucket.of(event, grain), RollupDelta()).add(delta)

    async def save(self) -> int:
        written = await rollups_db.bump_many(self._deltas)
        self._deltas.clear()
        return written


async def rebuild_rollups(
    since: datetime | None = None, batch: int = 10_000, horizon: datetime | None = None
) -> int:
    """Recomputes every kind of bucket from the raw events (all days, or the days from `since` on).

    A repair tool: buckets are written just after their event, so a crash between the two writes leaves a
    bucket one count behind. It replays events through `RollupBuilder` (the live path's own rules) and then
    replaces the buckets of the days it covered. Downloads finishing while it runs may be counted or not:
    run it when the service is quiet. Returns the number of buckets written.

    With a retention `horizon` (raw events before it may be gone), only the days wholly after it are
    rebuilt: the buckets of older days are the only figures left of them, and are kept as they are.
    """
    start = day_of(since) if since else None
    if horizon is not None:
        kept_from = day_of(horizon) if day_of(horizon) == horizon else day_of(horizon) + timedelta(days=1)
        start = kept_from if start is None or start < kept_from else start
    builder = RollupBuilder()
    async for event in events_db.scan(EventQuery(since=start), batch):
        builder.add(event)
    await rollups_db.delete_from(start)
    return await builder.save()
