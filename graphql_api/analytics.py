"""Aggregation pipelines over download events: per-model totals, stats, and the rollups behind them."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from beanie import SortDirection
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from .documents import DownloadEvent, DownloadMode, DownloadRollup, DownloadStatus
from .errors import InvalidInput
from .pagination import Page, keyset_page


@dataclass(frozen=True, slots=True)
class ModelDownloadTotals:
    completed: int
    last_downloaded_at: datetime | None


async def model_download_totals(model_ids: Sequence[ObjectId]) -> list[ModelDownloadTotals]:
    """Completed downloads and the last one's time for many models in one aggregation (a DataLoader batch)."""
    pipeline = [
        {"$match": {"model_id": {"$in": list(model_ids)}, "status": DownloadStatus.COMPLETED.value}},
        {"$group": {"_id": "$model_id", "n": {"$sum": 1}, "last": {"$max": "$finished_at"}}},
    ]
    rows = await DownloadEvent.get_pymongo_collection().aggregate(pipeline)
    found = {row["_id"]: ModelDownloadTotals(row["n"], row["last"]) async for row in rows}
    return [found.get(mid, ModelDownloadTotals(0, None)) for mid in model_ids]


# Duration histogram: geometric buckets of ratio HIST_RATIO from HIST_MIN seconds. A percentile read from it
# is the bucket's geometric midpoint, so it is within a factor sqrt(HIST_RATIO) (about ±5%) of the exact value
# (and within the bucket's bounds: [lower, lower * HIST_RATIO)).
HIST_MIN = 0.001
HIST_RATIO = 1.1
_LOG_RATIO = math.log(HIST_RATIO)


def duration_bucket(seconds: float) -> int:
    if seconds <= HIST_MIN:
        return 0
    return 1 + int(math.log(seconds / HIST_MIN) / _LOG_RATIO)


def bucket_value(index: int) -> float:
    """A bucket's representative duration: its geometric midpoint (bucket 0 holds all ≤ HIST_MIN)."""
    if index == 0:
        return HIST_MIN
    lower = HIST_MIN * HIST_RATIO ** (index - 1)
    return lower * math.sqrt(HIST_RATIO)


def day_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _rollup_key(event: DownloadEvent) -> tuple[str, dict[str, Any]]:
    day = day_of(event.started_at)
    fields = {
        "day": day,
        "model_name": event.model_name,
        "model_version": event.model_version,
        "project_name": event.project_name,
        "mode": event.mode.value,
    }
    key = "|".join([day.strftime("%Y-%m-%d"), event.model_name, str(event.model_version), event.project_name])
    return f"{key}|{event.mode.value}", fields


async def _bump(event: DownloadEvent, update: dict[str, Any]) -> None:
    key, fields = _rollup_key(event)
    collection = DownloadRollup.get_pymongo_collection()
    # A plain insert creates the bucket (a lost race is harmless); upserts lost increments on SecantusDB 0.7.
    with contextlib.suppress(DuplicateKeyError):
        await collection.insert_one({"_id": key, **fields, **_EMPTY_ROLLUP})
    await collection.update_one({"_id": key}, update)


_EMPTY_ROLLUP: dict[str, Any] = {
    "downloads": 0,
    "completed": 0,
    "aborted": 0,
    "failed": 0,
    "bytes_sent": 0,
    "duration_count": 0,
    "duration_sum": 0.0,
    "duration_max": None,
    "duration_hist": {},
    "engineers": [],
}


async def record_started(event: DownloadEvent) -> None:
    """Counts a new download (any mode) in its day's rollup, at the moment it is recorded."""
    await _bump(event, {"$inc": {"downloads": 1}, "$addToSet": {"engineers": event.engineer}})


async def record_finished(event: DownloadEvent) -> None:
    """Adds a terminal download's outcome, bytes and duration to its day's rollup."""
    inc: dict[str, Any] = {event.status.value.lower(): 1, "bytes_sent": event.bytes_sent}
    update: dict[str, Any] = {"$inc": inc}
    if event.duration_seconds is not None:
        inc["duration_count"] = 1
        inc["duration_sum"] = event.duration_seconds
        inc[f"duration_hist.{duration_bucket(event.duration_seconds)}"] = 1
        update["$max"] = {"duration_max": event.duration_seconds}
    await _bump(event, update)


@dataclass
class EventQuery:
    """A filter over download events, shared by the `downloads` list and `downloadStats`."""

    model_names: list[str] = field(default_factory=list)
    version: int | None = None
    project_names: list[str] = field(default_factory=list)
    engineers: list[str] = field(default_factory=list)
    statuses: list[DownloadStatus] = field(default_factory=list)
    mode: DownloadMode | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_bytes: int | None = None

    def validate(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise InvalidInput("filter.since", "must not be later than filter.until")
        if self.version is not None and self.version < 1:
            raise InvalidInput("filter.version", "must be at least 1")
        if self.min_bytes is not None and self.min_bytes < 0:
            raise InvalidInput("filter.minBytes", "must not be negative")

    def to_mongo(self) -> dict[str, Any]:
        self.validate()
        q: dict[str, Any] = {}
        if self.model_names:
            q["model_name"] = self.model_names[0] if len(self.model_names) == 1 else {"$in": self.model_names}
        if self.version is not None:
            q["model_version"] = self.version
        if self.project_names:
            q["project_name"] = (
                self.project_names[0] if len(self.project_names) == 1 else {"$in": self.project_names}
            )
        if self.engineers:
            q["engineer"] = self.engineers[0] if len(self.engineers) == 1 else {"$in": self.engineers}
        if self.statuses:
            values = [s.value for s in self.statuses]
            q["status"] = values[0] if len(values) == 1 else {"$in": values}
        if self.mode is not None:
            q["mode"] = self.mode.value
        if self.since or self.until:
            rng: dict[str, Any] = {}
            if self.since:
                rng["$gte"] = self.since
            if self.until:
                rng["$lt"] = self.until
            q["started_at"] = rng
        if self.min_bytes is not None:
            q["bytes_sent"] = {"$gte": self.min_bytes}
        return q


class DownloadOrder(StrEnum):
    STARTED_AT_DESC = "STARTED_AT_DESC"
    STARTED_AT_ASC = "STARTED_AT_ASC"
    BYTES_SENT_DESC = "BYTES_SENT_DESC"
    BYTES_SENT_ASC = "BYTES_SENT_ASC"
    DURATION_DESC = "DURATION_DESC"
    DURATION_ASC = "DURATION_ASC"


_ASC, _DESC = SortDirection.ASCENDING, SortDirection.DESCENDING
EVENT_SORTS: dict[DownloadOrder, list[tuple[str, SortDirection]]] = {
    DownloadOrder.STARTED_AT_DESC: [("started_at", _DESC), ("_id", _DESC)],
    DownloadOrder.STARTED_AT_ASC: [("started_at", _ASC), ("_id", _ASC)],
    DownloadOrder.BYTES_SENT_DESC: [("bytes_sent", _DESC), ("_id", _DESC)],
    DownloadOrder.BYTES_SENT_ASC: [("bytes_sent", _ASC), ("_id", _ASC)],
    DownloadOrder.DURATION_DESC: [("duration_seconds", _DESC), ("_id", _DESC)],
    DownloadOrder.DURATION_ASC: [("duration_seconds", _ASC), ("_id", _ASC)],
}


async def list_events(
    query: EventQuery, order: DownloadOrder, first: int | None, after: str | None
) -> Page[DownloadEvent]:
    """One keyset page of raw events. Ordering by duration lists only finished downloads."""
    base = query.to_mongo()
    if order in (DownloadOrder.DURATION_ASC, DownloadOrder.DURATION_DESC):
        base = {**base, "duration_seconds": {"$ne": None}}
    return await keyset_page(DownloadEvent, base, EVENT_SORTS[order], order.value, first, after)
