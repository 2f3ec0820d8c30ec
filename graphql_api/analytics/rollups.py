"""The rollup write path: what each event adds to its day's bucket, live or in bulk, and the rebuild."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..db import events as events_db
from ..db import rollup_state
from ..db import rollups as rollups_db
from ..db.rollups import GRAINS, RollupBucket, RollupDelta, Staged
from ..documents import TERMINAL_STATUSES, DownloadEvent, DownloadMode, DownloadStatus, RollupStage
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


RECORDED, FINISHED, VERIFIED = RollupStage.RECORDED, RollupStage.FINISHED, RollupStage.VERIFIED


def stage_delta(event: Outcome, stage: str) -> RollupDelta:
    """What one stage of `event` adds to each of its buckets: the three stages add up to
    `delta_of(event, started=True, finished=True)`."""
    if stage == RECORDED:
        return delta_of(event, started=True, finished=False)
    if stage == FINISHED:
        return delta_of(event, started=False, finished=True)
    matches = event.sha256_matches
    return RollupDelta(verified=int(matches is True), mismatched=int(matches is False))


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """The stored fields of an event that `delta_of` reads (lighter than building a DownloadEvent)."""

    engineer: str
    model_name: str
    model_version: int
    status: DownloadStatus
    completes: bool
    bytes_sent: int
    duration_seconds: float | None
    finished_at: datetime | None
    sha256_matches: bool | None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> StoredOutcome:
        return cls(
            doc["engineer"],
            doc["model_name"],
            doc["model_version"],
            DownloadStatus(doc["status"]),
            bool(doc.get("completes")),
            doc.get("bytes_sent") or 0,
            doc.get("duration_seconds"),
            doc.get("finished_at"),
            doc.get("sha256_matches"),
        )


def staged(doc: Mapping[str, Any], after: datetime, upto: datetime | None = None) -> list[Staged]:
    """The stages of a stored event staged in (after, upto] (no upper bound without `upto`)."""
    stages = [(stage, at) for stage, at in (doc.get("stages") or {}).items() if at > after]
    if upto is not None:
        stages = [(stage, at) for stage, at in stages if at <= upto]
    if not stages:
        return []
    event = StoredOutcome.of(doc)
    return [Staged(doc, stage, at, stage_delta(event, stage)) for stage, at in stages]


async def staged_between(after: datetime, upto: datetime | None = None) -> list[Staged]:
    """The stages of every stored event staged in (after, upto] (no upper bound without `upto`)."""
    found: list[Staged] = []
    async for doc in events_db.staged_after(after):
        found += staged(doc, after, upto)
    return found


async def pending() -> list[Staged]:
    """Every stage the roller may not have folded yet (staged after its watermark): what a reader of the
    rollups adds to the buckets that do not hold it yet (db/rollups/pending.py: `split`) to stay exact."""
    return await staged_between(await rollup_state.watermark())


async def _bump_all(event: DownloadEvent, delta: RollupDelta) -> None:
    # The day's and the hour's bucket, side by side: one round trip of latency for both.
    await rollups_db.bump_each([RollupBucket.of(event, grain) for grain in GRAINS], delta)


async def record_started(event: DownloadEvent) -> None:
    """Counts a new download in its buckets at once, bypassing the roller: for events written without
    stages (tests and benchmarks that build data as the synchronous path did; downloads stamp stages)."""
    await _bump_all(event, stage_delta(event, RECORDED))


async def record_finished(event: DownloadEvent) -> None:
    """Adds a terminal download's outcome to its buckets at once (see `record_started`)."""
    await _bump_all(event, stage_delta(event, FINISHED))


async def record_verification(event: DownloadEvent) -> None:
    """Counts a download's reported verification in its buckets at once (see `record_started`)."""
    await _bump_all(event, stage_delta(event, VERIFIED))


class RollupBuilder:
    """The bucket increments of many events, summed in memory and written in bulk (bulk loads, rebuilds).

    It applies exactly what `record_started` and `record_finished` apply one event at a time.
    """

    def __init__(self) -> None:
        self._deltas: dict[RollupBucket, RollupDelta] = {}

    def add(self, event: DownloadEvent, upto: datetime | None = None) -> None:
        """Adds the whole event; with `upto`, an event with stages adds only those staged by then (the
        later ones are the roller's)."""
        if not isinstance(event.status, DownloadStatus):  # built with model_construct from raw documents
            event.status = DownloadStatus(event.status)
            event.mode = DownloadMode(event.mode)
        stages = getattr(event, "stages", None) or {}
        if upto is None or not stages:
            delta = delta_of(event, started=True, finished=True)
        else:
            delta = RollupDelta()
            for stage, at in stages.items():
                if at <= upto:
                    delta.add(stage_delta(event, stage))
        for grain in GRAINS:
            self._deltas.setdefault(RollupBucket.of(event, grain), RollupDelta()).add(delta)

    async def save(self, rolled_to: datetime | None = None) -> int:
        written = await rollups_db.bump_many(self._deltas, rolled_to=rolled_to)
        self._deltas.clear()
        return written


async def rebuild_from_events(
    since: datetime | None = None,
    batch: int = 10_000,
    horizon: datetime | None = None,
    upto: datetime | None = None,
) -> int:
    """Recomputes every kind of bucket from the raw events (all days, or the days from `since` on), each
    event's stages up to `upto` (the roller's watermark, which the new buckets are marked rolled to); run
    by `roller.rebuild_rollups`, which holds the roller's lease meanwhile and has folded up to `upto` first.

    It replays events through `RollupBuilder` (the roller's own rules) and then replaces the buckets of the
    days it covered. Returns the number of buckets written.

    With a retention `horizon` (raw events before it may be gone), only the days wholly after it are
    rebuilt: the buckets of older days are the only figures left of them, and are kept as they are.
    """
    start = day_of(since) if since else None
    if horizon is not None:
        kept_from = day_of(horizon) if day_of(horizon) == horizon else day_of(horizon) + timedelta(days=1)
        start = kept_from if start is None or start < kept_from else start
    builder = RollupBuilder()
    async for event in events_db.scan(EventQuery(since=start), batch):
        builder.add(event, upto)
    await rollups_db.delete_from(start)
    return await builder.save(rolled_to=upto)
