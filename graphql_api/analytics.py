"""Aggregation pipelines over download events: per-model totals, stats, and the rollups behind them."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from beanie import SortDirection
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from .documents import TERMINAL_STATUSES, DownloadEvent, DownloadMode, DownloadRollup, DownloadStatus
from .errors import InvalidInput
from .pagination import Page, keyset_page


@dataclass(frozen=True, slots=True)
class ModelDownloadTotals:
    completed: int
    last_downloaded_at: datetime | None


async def model_download_totals(keys: Sequence[tuple[str, int]]) -> list[ModelDownloadTotals]:
    """Completed downloads and the last one's time per (name, version), in one aggregation over the daily
    rollups (a DataLoader batch): a few hundred small documents per model, not one per download."""
    pipeline: list[dict[str, Any]] = [
        {
            "$match": {
                "model_name": {"$in": sorted({name for name, _ in keys})},
                "model_version": {"$in": sorted({version for _, version in keys})},
                "completed": {"$gt": 0},
            }
        },
        {
            "$group": {
                "_id": {"n": "$model_name", "v": "$model_version"},
                "n": {"$sum": "$completed"},
                "last": {"$max": "$last_completed_at"},
            }
        },
    ]
    rows = await DownloadRollup.get_pymongo_collection().aggregate(pipeline)
    found = {(r["_id"]["n"], r["_id"]["v"]): ModelDownloadTotals(r["n"], r["last"]) async for r in rows}
    return [found.get(key, ModelDownloadTotals(0, None)) for key in keys]


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


@dataclass
class RollupDelta:
    """What one event adds to its day's rollup bucket, at start (`started`) or at its end (`finished`)."""

    inc: dict[str, float] = field(default_factory=dict)
    maxima: dict[str, Any] = field(default_factory=dict)
    engineer: str | None = None

    @classmethod
    def of(cls, event: DownloadEvent, *, started: bool, finished: bool) -> RollupDelta:
        delta = cls(engineer=event.engineer if started else None)
        if started:
            delta.inc["downloads"] = 1
        if finished and event.status in TERMINAL_STATUSES:
            delta.inc[event.status.value.lower()] = 1
            delta.inc["bytes_sent"] = event.bytes_sent
            if event.duration_seconds is not None:
                delta.inc["duration_count"] = 1
                delta.inc["duration_sum"] = event.duration_seconds
                delta.inc[f"duration_hist.{duration_bucket(event.duration_seconds)}"] = 1
                delta.maxima["duration_max"] = event.duration_seconds
            if event.status is DownloadStatus.COMPLETED and event.finished_at is not None:
                delta.maxima["last_completed_at"] = event.finished_at
        return delta

    def update(self, engineers: list[str]) -> dict[str, Any]:
        """The Mongo update applying this delta (with `engineers` added to the bucket's set)."""
        update: dict[str, Any] = {
            "$inc": {k: v if k == "duration_sum" else int(v) for k, v in self.inc.items()}
        }
        if self.maxima:
            update["$max"] = self.maxima
        if engineers:
            update["$addToSet"] = {"engineers": {"$each": engineers}}
        return update


async def _bump(event: DownloadEvent, delta: RollupDelta) -> None:
    key, fields = _rollup_key(event)
    collection = DownloadRollup.get_pymongo_collection()
    update = delta.update([delta.engineer] if delta.engineer else [])
    if (await collection.update_one({"_id": key}, update)).matched_count:
        return
    # The day's first event creates the bucket with a plain insert (a lost race is harmless), then updates:
    # upserts lost increments on SecantusDB 0.7.
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
    "last_completed_at": None,
    "duration_hist": {},
    "engineers": [],
}


async def record_started(event: DownloadEvent) -> None:
    """Counts a new download (any mode) in its day's rollup, at the moment it is recorded."""
    await _bump(event, RollupDelta.of(event, started=True, finished=False))


async def record_finished(event: DownloadEvent) -> None:
    """Adds a terminal download's outcome, bytes and duration to its day's rollup."""
    await _bump(event, RollupDelta.of(event, started=False, finished=True))


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
    sort = EVENT_SORTS[order]
    return await keyset_page(
        DownloadEvent,
        base,
        sort,
        order.value,
        first,
        after,
        newest_first_on="started_at",
        count_all=count_events,
    )


async def count_events() -> int:
    """All download events, summed from the daily rollups: a few thousand documents instead of a scan of
    every event (SecantusDB counts a collection by scanning it). Each event is counted there as it is
    recorded, a moment after its insert."""
    rows = await DownloadRollup.get_pymongo_collection().aggregate(
        [{"$group": {"_id": None, "n": {"$sum": "$downloads"}}}]
    )
    found = [row["n"] async for row in rows]
    return int(found[0]) if found else 0


class Dimension(StrEnum):
    MODEL = "MODEL"
    VERSION = "VERSION"
    PROJECT = "PROJECT"
    ENGINEER = "ENGINEER"
    MODE = "MODE"
    STATUS = "STATUS"


class Interval(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


class StatsMetric(StrEnum):
    PERIOD_START = "PERIOD_START"
    DOWNLOADS = "DOWNLOADS"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAILED = "FAILED"
    TOTAL_BYTES = "TOTAL_BYTES"
    AVG_DURATION = "AVG_DURATION"
    P50_DURATION = "P50_DURATION"
    P95_DURATION = "P95_DURATION"
    MAX_DURATION = "MAX_DURATION"
    UNIQUE_ENGINEERS = "UNIQUE_ENGINEERS"


class StatsSource(StrEnum):
    RAW = "RAW"
    ROLLUP = "ROLLUP"


# Dimension → (field on raw events, field on rollups or None when rollups do not keep it).
DIMENSION_FIELDS: dict[Dimension, tuple[str, str | None]] = {
    Dimension.MODEL: ("model_name", "model_name"),
    Dimension.VERSION: ("model_version", "model_version"),
    Dimension.PROJECT: ("project_name", "project_name"),
    Dimension.ENGINEER: ("engineer", None),
    Dimension.MODE: ("mode", "mode"),
    Dimension.STATUS: ("status", None),
}
METRIC_FIELDS: dict[StatsMetric, str] = {
    StatsMetric.PERIOD_START: "period_start",
    StatsMetric.DOWNLOADS: "downloads",
    StatsMetric.COMPLETED: "completed",
    StatsMetric.ABORTED: "aborted",
    StatsMetric.FAILED: "failed",
    StatsMetric.TOTAL_BYTES: "total_bytes",
    StatsMetric.AVG_DURATION: "avg_duration",
    StatsMetric.P50_DURATION: "p50_duration",
    StatsMetric.P95_DURATION: "p95_duration",
    StatsMetric.MAX_DURATION: "max_duration",
    StatsMetric.UNIQUE_ENGINEERS: "unique_engineers",
}
MAX_STATS_LIMIT = 1000


@dataclass
class StatsRow:
    model_name: str | None = None
    model_version: int | None = None
    project_name: str | None = None
    engineer: str | None = None
    mode: DownloadMode | None = None
    status: DownloadStatus | None = None
    period_start: datetime | None = None
    downloads: int = 0
    completed: int = 0
    aborted: int = 0
    failed: int = 0
    total_bytes: int = 0
    avg_duration: float | None = None
    p50_duration: float | None = None
    p95_duration: float | None = None
    max_duration: float | None = None
    unique_engineers: int = 0
    source: StatsSource = StatsSource.RAW


@dataclass
class StatsRequest:
    query: EventQuery
    group_by: list[Dimension]
    interval: Interval | None = None
    time_zone: str | None = None
    order_by: StatsMetric | None = None
    descending: bool = True
    limit: int = 100
    exact: bool = False

    def validate(self, max_hour_range_days: int) -> None:
        self.query.validate()
        if not 1 <= self.limit <= MAX_STATS_LIMIT:
            raise InvalidInput("limit", f"must be between 1 and {MAX_STATS_LIMIT}, got {self.limit}")
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidInput("groupBy", "lists a dimension twice")
        if self.time_zone is not None:
            try:
                ZoneInfo(self.time_zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise InvalidInput("timeZone", f"unknown time zone {self.time_zone!r}") from exc
        if self.interval is Interval.HOUR:
            q = self.query
            if q.since is None:
                raise InvalidInput(
                    "filter.since", f"HOUR buckets need a since at most {max_hour_range_days} days back"
                )
            until = q.until or datetime.now(UTC)
            if until - q.since > timedelta(days=max_hour_range_days):
                raise InvalidInput(
                    "interval",
                    f"HOUR buckets may span at most {max_hour_range_days} days; use DAY or narrow the range",
                )
        if self.order_by is StatsMetric.PERIOD_START and self.interval is None:
            raise InvalidInput("orderBy", "PERIOD_START needs an interval")

    @property
    def tz(self) -> str:
        return self.time_zone or "UTC"

    def rollups_can_answer(self) -> bool:
        """Rollups hold UTC days per (model, version, project, mode); anything finer needs raw events."""
        q = self.query
        if self.exact or q.engineers or q.statuses or q.min_bytes is not None:
            return False
        if any(DIMENSION_FIELDS[d][1] is None for d in self.group_by):
            return False
        if self.interval is Interval.HOUR or self.tz not in ("UTC", "Etc/UTC"):
            return False
        return all(t is None or t == day_of(t) for t in (q.since, q.until))


def _trunc(date_expr: Any, interval: Interval, tz: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"date": date_expr, "unit": interval.value.lower(), "timezone": tz}
    if interval is Interval.WEEK:
        spec["startOfWeek"] = "monday"
    return {"$dateTrunc": spec}


def _count_if(status: DownloadStatus) -> dict[str, Any]:
    return {"$sum": {"$cond": [{"$eq": ["$status", status.value]}, 1, 0]}}


def _order_and_limit(req: StatsRequest) -> list[dict[str, Any]]:
    metric = req.order_by or StatsMetric.DOWNLOADS
    direction = -1 if req.descending else 1
    sort: dict[str, int] = {METRIC_FIELDS[metric]: direction}
    # Ties break on the group key so that equal rows come back in a stable order.
    sort.update({f"_id.{d.value}": 1 for d in req.group_by})
    if req.interval:
        sort.setdefault("period_start", 1)
    return [{"$sort": sort}, {"$limit": req.limit}]


def raw_pipeline(req: StatsRequest) -> list[dict[str, Any]]:
    """The whole aggregation over raw events, percentiles included; nothing but result rows leaves Mongo.

    Two `$group` stages: first per (group, engineer), then per group, so unique engineers are a count of
    sub-groups. (`$addToSet` over a large group was some 8x slower on SecantusDB.)
    """
    key: dict[str, Any] = {d.value: f"${DIMENSION_FIELDS[d][0]}" for d in req.group_by}
    if req.interval:
        key["period"] = _trunc("$started_at", req.interval, req.tz)
    is_duration = {"$isNumber": "$duration_seconds"}
    return [
        {"$match": req.query.to_mongo()},
        {
            "$group": {
                "_id": {"k": key, "engineer": "$engineer"},
                "downloads": {"$sum": 1},
                "completed": _count_if(DownloadStatus.COMPLETED),
                "aborted": _count_if(DownloadStatus.ABORTED),
                "failed": _count_if(DownloadStatus.FAILED),
                "total_bytes": {"$sum": "$bytes_sent"},
                "duration_sum": {"$sum": {"$cond": [is_duration, "$duration_seconds", 0]}},
                "duration_count": {"$sum": {"$cond": [is_duration, 1, 0]}},
                "max_duration": {"$max": "$duration_seconds"},
                "durations": {"$push": "$duration_seconds"},
            }
        },
        {
            "$group": {
                "_id": "$_id.k",
                "downloads": {"$sum": "$downloads"},
                "completed": {"$sum": "$completed"},
                "aborted": {"$sum": "$aborted"},
                "failed": {"$sum": "$failed"},
                "total_bytes": {"$sum": "$total_bytes"},
                "duration_sum": {"$sum": "$duration_sum"},
                "duration_count": {"$sum": "$duration_count"},
                "max_duration": {"$max": "$max_duration"},
                "unique_engineers": {"$sum": 1},
                "durations": {"$push": "$durations"},
            }
        },
        {
            "$project": {
                "downloads": 1,
                "completed": 1,
                "aborted": 1,
                "failed": 1,
                "total_bytes": 1,
                "max_duration": 1,
                "unique_engineers": 1,
                "avg_duration": _safe_avg,
                "percentiles": {
                    "$percentile": {
                        "input": {
                            "$reduce": {
                                "input": "$durations",
                                "initialValue": [],
                                "in": {"$concatArrays": ["$$value", "$$this"]},
                            }
                        },
                        "p": [0.5, 0.95],
                        "method": "approximate",
                    }
                },
                "period_start": "$_id.period",
            }
        },
        {
            "$addFields": {
                "p50_duration": {"$arrayElemAt": ["$percentiles", 0]},
                "p95_duration": {"$arrayElemAt": ["$percentiles", 1]},
            }
        },
        *_order_and_limit(req),
    ]


_safe_avg: dict[str, Any] = {
    "$cond": [{"$gt": ["$duration_count", 0]}, {"$divide": ["$duration_sum", "$duration_count"]}, None]
}


def rollup_match(q: EventQuery) -> dict[str, Any]:
    m: dict[str, Any] = {}
    if q.model_names:
        m["model_name"] = {"$in": q.model_names}
    if q.version is not None:
        m["model_version"] = q.version
    if q.project_names:
        m["project_name"] = {"$in": q.project_names}
    if q.mode is not None:
        m["mode"] = q.mode.value
    if q.since or q.until:
        rng: dict[str, Any] = {}
        if q.since:
            rng["$gte"] = q.since
        if q.until:
            rng["$lt"] = q.until
        m["day"] = rng
    return m


# Metrics that rollups can only finish in Python (merging histograms and engineer sets of many days).
_MERGED_METRICS = (StatsMetric.P50_DURATION, StatsMetric.P95_DURATION, StatsMetric.UNIQUE_ENGINEERS)


def rollup_pipeline(req: StatsRequest) -> list[dict[str, Any]]:
    """The same answer from daily rollups. Sums are exact and computed here; the per-day engineer sets and
    duration histograms of each group come back to be merged (a set union, a histogram sum) by `_row`:
    on SecantusDB a `$reduce`/`$setUnion` of them cost about 9x the whole rest of the pipeline."""
    key: dict[str, Any] = {d.value: f"${DIMENSION_FIELDS[d][1]}" for d in req.group_by}
    if req.interval:
        key["period"] = _trunc("$day", req.interval, "UTC")
    pipeline: list[dict[str, Any]] = [
        {"$match": rollup_match(req.query)},
        {
            "$group": {
                "_id": key,
                "downloads": {"$sum": "$downloads"},
                "completed": {"$sum": "$completed"},
                "aborted": {"$sum": "$aborted"},
                "failed": {"$sum": "$failed"},
                "total_bytes": {"$sum": "$bytes_sent"},
                "duration_sum": {"$sum": "$duration_sum"},
                "duration_count": {"$sum": "$duration_count"},
                "max_duration": {"$max": "$duration_max"},
                "engineer_sets": {"$push": "$engineers"},
                "hists": {"$push": "$duration_hist"},
            }
        },
        {"$addFields": {"avg_duration": _safe_avg, "period_start": "$_id.period"}},
    ]
    if req.order_by not in _MERGED_METRICS:
        pipeline += _order_and_limit(req)
    return pipeline


def histogram_percentile(hist: dict[int, int], p: float) -> float | None:
    """Nearest-rank percentile read off a merged histogram: the geometric midpoint of the rank's bucket."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_value(index)
    return None  # pragma: no cover - the loop always reaches rank


def _row(doc: dict[str, Any], source: StatsSource) -> StatsRow:
    key = doc["_id"] or {}
    mode, status = key.get(Dimension.MODE.value), key.get(Dimension.STATUS.value)
    row = StatsRow(
        model_name=key.get(Dimension.MODEL.value),
        model_version=key.get(Dimension.VERSION.value),
        project_name=key.get(Dimension.PROJECT.value),
        engineer=key.get(Dimension.ENGINEER.value),
        mode=DownloadMode(mode) if mode else None,
        status=DownloadStatus(status) if status else None,
        period_start=doc.get("period_start"),
        downloads=doc["downloads"],
        completed=doc["completed"],
        aborted=doc["aborted"],
        failed=doc["failed"],
        total_bytes=doc["total_bytes"],
        avg_duration=doc.get("avg_duration"),
        max_duration=doc.get("max_duration"),
        source=source,
    )
    if source is StatsSource.RAW:
        row.unique_engineers = doc["unique_engineers"]
        row.p50_duration, row.p95_duration = doc.get("p50_duration"), doc.get("p95_duration")
    else:
        row.unique_engineers = len(set().union(*doc["engineer_sets"]))
        merged: dict[int, int] = {}
        for hist in doc["hists"]:
            for index, count in hist.items():
                merged[int(index)] = merged.get(int(index), 0) + count
        row.p50_duration = histogram_percentile(merged, 0.5)
        row.p95_duration = histogram_percentile(merged, 0.95)
    return row


async def download_stats(req: StatsRequest, max_hour_range_days: int = 31) -> list[StatsRow]:
    """`downloadStats`: from rollups when they can answer exactly (counts, bytes), else from raw events."""
    req.validate(max_hour_range_days)
    if not req.rollups_can_answer():
        docs = await DownloadEvent.get_pymongo_collection().aggregate(raw_pipeline(req), allowDiskUse=True)
        return [_row(d, StatsSource.RAW) async for d in docs]
    docs = await DownloadRollup.get_pymongo_collection().aggregate(rollup_pipeline(req))
    rows = [_row(d, StatsSource.ROLLUP) async for d in docs]
    if req.order_by in _MERGED_METRICS:
        name = METRIC_FIELDS[req.order_by]
        keys = [d.value for d in req.group_by]
        # Same order as Mongo's: nulls lowest, ties broken by the group key ascending.
        rows.sort(key=lambda r: tuple(_sortable(getattr(r, _ROW_FIELDS[k])) for k in keys))
        rows.sort(key=lambda r: _sortable(getattr(r, name)), reverse=req.descending)
        rows = rows[: req.limit]
    return rows


_ROW_FIELDS = {
    "MODEL": "model_name",
    "VERSION": "model_version",
    "PROJECT": "project_name",
    "ENGINEER": "engineer",
    "MODE": "mode",
    "STATUS": "status",
}


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)


async def completed_by_version(since: datetime | None, until: datetime | None) -> dict[tuple[str, int], int]:
    """Completed downloads per (model name, version) started in [since, until): rollups when days align."""
    q = EventQuery(since=since, until=until, statuses=[DownloadStatus.COMPLETED])
    q.validate()
    if all(t is None or t == day_of(t) for t in (since, until)):
        pipeline: list[dict[str, Any]] = [
            {"$match": rollup_match(q)},
            {"$group": {"_id": {"n": "$model_name", "v": "$model_version"}, "c": {"$sum": "$completed"}}},
        ]
        rows = await DownloadRollup.get_pymongo_collection().aggregate(pipeline)
    else:
        pipeline = [
            {"$match": q.to_mongo()},
            {"$group": {"_id": {"n": "$model_name", "v": "$model_version"}, "c": {"$sum": 1}}},
        ]
        rows = await DownloadEvent.get_pymongo_collection().aggregate(pipeline)
    return {(r["_id"]["n"], r["_id"]["v"]): r["c"] async for r in rows if r["c"]}


def indexes_used(explain: Any) -> set[str]:
    """The index names anywhere in an explain document (IXSCAN stages), for checks and the bench."""
    found: set[str] = set()
    if isinstance(explain, dict):
        if explain.get("stage") == "IXSCAN" and "indexName" in explain:
            found.add(str(explain["indexName"]))
        for value in explain.values():
            found |= indexes_used(value)
    elif isinstance(explain, list):
        for value in explain:
            found |= indexes_used(value)
    return found


class RollupBuilder:
    """The rollup increments of many events, built in memory and written in one bulk call (bulk loads).

    It applies exactly what `record_started` and `record_finished` apply one event at a time.
    """

    def __init__(self) -> None:
        self._docs: dict[str, tuple[dict[str, Any], RollupDelta, set[str]]] = {}

    def add(self, event: DownloadEvent) -> None:
        if not isinstance(event.status, DownloadStatus):  # built with model_construct from raw documents
            event.status = DownloadStatus(event.status)
            event.mode = DownloadMode(event.mode)
        key, fields = _rollup_key(event)
        if key not in self._docs:
            self._docs[key] = (fields, RollupDelta(), set())
        _, total, engineers = self._docs[key]
        delta = RollupDelta.of(event, started=True, finished=True)
        for name, amount in delta.inc.items():
            total.inc[name] = total.inc.get(name, 0) + amount
        for name, value in delta.maxima.items():
            total.maxima[name] = max(total.maxima[name], value) if name in total.maxima else value
        engineers.add(event.engineer)

    async def save(self) -> int:
        collection = DownloadRollup.get_pymongo_collection()
        ops = []
        for key, (fields, total, engineers) in self._docs.items():
            update = {**total.update(sorted(engineers)), "$setOnInsert": fields}
            ops.append(UpdateOne({"_id": key}, update, upsert=True))
        for start in range(0, len(ops), 1000):
            await collection.bulk_write(ops[start : start + 1000], ordered=False)
        self._docs.clear()
        return len(ops)


async def rebuild_rollups(since: datetime | None = None, batch: int = 10_000) -> int:
    """Recomputes the daily rollups from the raw events (all days, or the days from `since` on).

    A repair tool: rollups are written just after their event, so a crash between the two writes leaves a
    bucket one count behind. It replays events through `RollupBuilder` (the live path's own rules) and then
    replaces the buckets of the days it covered. Downloads finishing while it runs may be counted or not:
    run it when the service is quiet. Returns the number of buckets written.
    """
    start = day_of(since) if since else None
    match: dict[str, Any] = {"started_at": {"$gte": start}} if start else {}
    fields = [
        "_id", "model_id", "model_name", "model_version", "project_name", "size_bytes", "engineer", "mode",
        "status", "bytes_sent", "started_at", "finished_at", "duration_seconds",
    ]  # fmt: skip
    builder = RollupBuilder()
    cursor = DownloadEvent.get_pymongo_collection().find(match, {f: 1 for f in fields}, batch_size=batch)
    async for doc in cursor:
        builder.add(DownloadEvent.model_construct(**{**doc, "id": doc["_id"]}))
    rollups = DownloadRollup.get_pymongo_collection()
    await rollups.delete_many({"day": {"$gte": start}} if start else {})
    return await builder.save()
