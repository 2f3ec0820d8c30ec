"""Writes on `download_events`: inserts, state transitions (by group commit), progress, verdicts, TTL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from beanie import PydanticObjectId
from beanie.odm.utils.dump import get_dict
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from ...documents import DownloadEvent, DownloadStatus, RollupStage
from ..batching import GroupCommit
from ..common import DUPLICATE_KEY, Condition, ensure_ttl, find_one, ttl_seconds

_OPEN = [DownloadStatus.IN_PROGRESS.value, DownloadStatus.ISSUED.value]


RETENTION_INDEX = "started_at_ttl"


async def ensure_retention(days: int) -> None:
    """Raw events expire `days` after they started (MODELHUB_EVENT_RETENTION_DAYS): a TTL index on
    `started_at`, created at start and changed in place (collMod) when the setting changes. The database's
    TTL monitor deletes them (MongoDB's every 60 s; SecantusDB 0.7 runs a sweeper of its own on the same
    period and honours the index and collMod alike), so a deleted event may outlive the horizon by a minute.
    The rollups are not touched: they keep the figures."""
    collection = DownloadEvent.get_pymongo_collection()
    # Every event has a size; no query ranges over it (see ensure_ttl on why the index is partial).
    await ensure_ttl(collection, "started_at", RETENTION_INDEX, days * 86_400, {"size_bytes": {"$gte": 0}})


async def retention_seconds() -> int | None:
    """The TTL index's `expireAfterSeconds`, or None when it does not exist."""
    return await ttl_seconds(DownloadEvent.get_pymongo_collection(), RETENTION_INDEX)


async def insert_many(events: list[dict[str, Any]]) -> None:
    """Bulk insert of already-built event documents (demo data)."""
    await DownloadEvent.get_pymongo_collection().insert_many(events, ordered=False)


def _staging(stage: RollupStage, at: datetime) -> tuple[Condition, Condition]:
    """The `$set` and `$max` that stamp a rollup stage on an event (see DownloadEvent.stages)."""
    return {f"stages.{stage.value}": at}, {"staged_at": at}


def _change(update: Condition, transition_id: str, staged: datetime | None) -> Condition:
    """The update of a state change: its fields and transition id, and the `finished` rollup stage it owes
    (`staged`)."""
    change: Condition = {"$set": {**update, "transition_id": transition_id}}
    if staged is not None:
        stage, latest = _staging(RollupStage.FINISHED, staged)
        change = {"$set": {**change["$set"], **stage}, "$max": latest}
    return change


async def _transition(flt: Condition, update: Condition, transition_id: str) -> DownloadEvent | None:
    """One atomic conditional update, then the event as it left it: None when `flt` no longer matches the
    event because another change came first. A retry of a change that did happen (same `transition_id`)
    returns the event as that change left it.

    An update_one and a read by _id rather than one findAndModify: SecantusDB 0.7 scans the whole
    collection for a findAndModify (tens of ms at a few thousand documents), while both of these use an index.
    """
    collection = DownloadEvent.get_pymongo_collection()
    result = await collection.update_one(flt, _change(update, transition_id, None))
    event = await find_one(DownloadEvent, {"_id": flt["_id"]})
    if result.modified_count == 0 and (event is None or event.transition_id != transition_id):
        return None
    return event


async def claim(
    event_id: PydanticObjectId | None, fields: Condition, transition_id: str
) -> DownloadEvent | None:
    """ISSUED → IN_PROGRESS with `fields`, atomically; None when the event was not ISSUED any more."""
    update = {**fields, "status": DownloadStatus.IN_PROGRESS.value}
    flt = {"_id": event_id, "status": DownloadStatus.ISSUED.value}
    return await _transition(flt, update, transition_id)


@dataclass(frozen=True)
class EventFinish:
    """An open event (ISSUED or IN_PROGRESS) → a terminal `status` with `fields`, stamped with its
    `finished` rollup stage at `staged`."""

    event_id: PydanticObjectId | None
    status: DownloadStatus
    fields: Condition
    transition_id: str
    staged: datetime

    def operation(self) -> UpdateOne:
        flt = {"_id": self.event_id, "status": {"$in": _OPEN}}
        update = {**self.fields, "status": self.status.value}
        return UpdateOne(flt, _change(update, self.transition_id, self.staged))


class EventWrites:
    """The writes on a download's path (its event, its finish), sent by group commit (db/batching.py): a
    burst of downloads costs a few commands, not two per download. Each call returns once its own write is
    acknowledged, with its own outcome."""

    def __init__(self, on_flush: Callable[[str, int], None] = lambda write, size: None) -> None:
        """`on_flush(write, size)`: told each flush's kind ("insert", "finish") and size (a metric)."""
        self._inserts: GroupCommit[DownloadEvent, bool] = GroupCommit(
            _insert_many, partial(on_flush, "insert")
        )
        self._finishes: GroupCommit[EventFinish, bool] = GroupCommit(
            _finish_many, partial(on_flush, "finish")
        )

    async def insert(self, event: DownloadEvent) -> None:
        """Idempotent: the id is chosen here, so a retried insert that had already been written (its
        acknowledgement lost in a stall) meets its own document and is not an error."""
        if event.id is None:
            event.id = PydanticObjectId()
        await self._inserts.submit(event)

    async def finish(self, change: EventFinish) -> bool:
        """True when the change is recorded (now, or by an earlier attempt with its transition id); False
        when the event had already finished."""
        return await self._finishes.submit(change)


async def _insert_many(events: Sequence[DownloadEvent]) -> list[bool | Exception]:
    """One unordered insert of the events: each is stored, or meets its own document (a retry), or fails
    alone with its write error."""
    collection = DownloadEvent.get_pymongo_collection()
    docs = [get_dict(e, to_db=True, keep_nulls=e.get_settings().keep_nulls) for e in events]
    outcomes: list[bool | Exception] = [True] * len(events)
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = {int(e["index"]): e for e in exc.details.get("writeErrors", [])}
        duplicates = [events[i].id for i, e in errors.items() if e.get("code") == DUPLICATE_KEY]
        mine = {d["_id"] async for d in collection.find({"_id": {"$in": duplicates}}, {"_id": 1})}
        for i, error in errors.items():
            if events[i].id not in mine:
                problem = DuplicateKeyError if error.get("code") == DUPLICATE_KEY else WriteError
                outcomes[i] = problem(str(error.get("errmsg")), error.get("code"), error)
    return outcomes


async def _finish_many(changes: Sequence[EventFinish]) -> list[bool | Exception]:
    """One unordered bulk update; when it changed fewer events than it had changes, one read tells which
    applied (their transition id is on the event) from those another change came before."""
    collection = DownloadEvent.get_pymongo_collection()
    result = await collection.bulk_write([c.operation() for c in changes], ordered=False)
    if result.modified_count == len(changes):
        return [True] * len(changes)
    ids = [c.event_id for c in changes]
    holds = {
        d["_id"]: d.get("transition_id")
        async for d in collection.find({"_id": {"$in": ids}}, {"transition_id": 1})
    }
    return [holds.get(c.event_id) == c.transition_id for c in changes]


async def record_progress(event_id: PydanticObjectId | None, sent: int, now: datetime) -> None:
    await DownloadEvent.get_pymongo_collection().update_one(
        {"_id": event_id, "status": DownloadStatus.IN_PROGRESS.value},
        {"$set": {"bytes_sent": sent, "heartbeat_at": now}},
    )


async def report_verification(
    event_id: PydanticObjectId, engineer: str, matches: bool, now: datetime
) -> DownloadEvent | None:
    """Records the verdict on an event of `engineer` that has none yet (one conditional update: two reports
    at once cannot both count), stamped with its `verified` rollup stage; None when there is no such event
    or it already has one."""
    collection = DownloadEvent.get_pymongo_collection()
    flt = {"_id": event_id, "engineer": engineer, "sha256_matches": None}
    stage, latest = _staging(RollupStage.VERIFIED, now)
    change = {"$set": {"sha256_matches": matches, "verified_at": now, **stage}, "$max": latest}
    result = await collection.update_one(flt, change)
    if not result.modified_count:
        return None
    return await find_one(DownloadEvent, {"_id": event_id})
