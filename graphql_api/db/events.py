"""Owner of `download_events`: inserts, state transitions, pages, and the raw stats scan (in pieces)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beanie import PydanticObjectId, SortDirection

from ..documents import DownloadEvent, DownloadStatus, utcnow
from ..limits import piece_seconds, scan_piece
from ..pagination import Page, PageRequest
from ..queries import Dimension, DownloadOrder, DownloadOrderField, EventQuery, StatsRequest
from . import work
from .common import (
    SAFE_AVG,
    Condition,
    Translator,
    any_of,
    bound,
    ensure_ttl,
    find_one,
    in_list,
    insert_once,
    merge_filters,
    ordered_page,
    time_window,
    translate,
    trunc,
    ttl_seconds,
)
from .paging import Sort, keyset_page


def _aliases(values: list[str | None]) -> Condition:
    """Requested aliases, None meaning "not asked by alias" (a missing or null field, as `$in` matches it)."""
    named = sorted({v for v in values if v is not None})
    if None not in values:
        return {"requested_alias": in_list(named)}
    return {"requested_alias": {"$in": [None, *named]}}


FILTERS: Mapping[str, Translator] = {
    "model_names": any_of("model_name"),
    "versions": any_of("model_version"),
    "project_names": any_of("project_name"),
    "engineers": any_of("engineer"),
    "statuses": any_of("status"),
    "modes": any_of("mode"),
    "client_kinds": any_of("client_kind"),
    "aliases": lambda values: _aliases(values),
    "since": bound("started_at", "$gte"),
    "until": bound("started_at", "$lt"),
    "min_bytes": bound("bytes_sent", "$gte"),
}

DIMENSIONS: dict[Dimension, str] = {
    Dimension.MODEL: "model_name",
    Dimension.VERSION: "model_version",
    Dimension.PROJECT: "project_name",
    Dimension.ENGINEER: "engineer",
    Dimension.MODE: "mode",
    Dimension.STATUS: "status",
    Dimension.CLIENT_KIND: "client_kind",
    Dimension.CLIENT_VERSION: "client_version",
    Dimension.ALIAS: "requested_alias",
}

SORT_FIELDS: dict[DownloadOrderField, str] = {
    DownloadOrderField.STARTED_AT: "started_at",
    DownloadOrderField.BYTES_SENT: "bytes_sent",
    DownloadOrderField.DURATION: "duration_seconds",
}


def sort_of(order: DownloadOrder) -> Sort:
    direction = SortDirection.DESCENDING if order.descending else SortDirection.ASCENDING
    return [(SORT_FIELDS[order.field], direction), ("_id", direction)]


_OPEN = [DownloadStatus.IN_PROGRESS.value, DownloadStatus.ISSUED.value]


def event_filter(q: EventQuery) -> Condition:
    """The MongoDB filter for `q`; raw events keep every field, so every filter must translate."""
    q.validate()
    flt = translate(q, FILTERS)
    if flt is None:
        raise TypeError(f"a field of {type(q).__name__} has no translation for download events")
    return flt


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


async def insert(event: DownloadEvent) -> None:
    """Idempotent: the id is chosen here, so a retried insert that had already been written (its
    acknowledgement lost in a stall) meets its own document and is not an error."""
    await insert_once(event)


async def insert_many(events: list[dict[str, Any]]) -> None:
    """Bulk insert of already-built event documents (demo data)."""
    await DownloadEvent.get_pymongo_collection().insert_many(events, ordered=False)


async def count_all() -> int:
    return int(await DownloadEvent.get_pymongo_collection().estimated_document_count())


async def get(event_id: Any) -> DownloadEvent | None:
    return await find_one(DownloadEvent, {"_id": event_id})


async def _transition(flt: Condition, update: Condition, transition_id: str) -> DownloadEvent | None:
    """One atomic conditional update: the event after `update`, or None when `flt` no longer matches it
    because another change came first. A retry of a change that did happen (same `transition_id`) returns
    the event as that change left it.

    An update_one and a read by _id rather than one findAndModify: SecantusDB 0.7 scans the whole
    collection for a findAndModify (tens of ms at a few thousand documents), while both of these use an index.
    """
    collection = DownloadEvent.get_pymongo_collection()
    result = await collection.update_one(flt, {"$set": {**update, "transition_id": transition_id}})
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


async def finish(
    event_id: PydanticObjectId | None, status: DownloadStatus, fields: Condition, transition_id: str
) -> DownloadEvent | None:
    """An open event (ISSUED or IN_PROGRESS) → a terminal `status`; None when it had already finished."""
    update = {**fields, "status": status.value}
    return await _transition({"_id": event_id, "status": {"$in": _OPEN}}, update, transition_id)


async def record_progress(event_id: PydanticObjectId | None, sent: int, now: datetime) -> None:
    await DownloadEvent.get_pymongo_collection().update_one(
        {"_id": event_id, "status": DownloadStatus.IN_PROGRESS.value},
        {"$set": {"bytes_sent": sent, "heartbeat_at": now}},
    )


async def report_verification(
    event_id: PydanticObjectId, engineer: str, matches: bool, now: datetime
) -> DownloadEvent | None:
    """Records the verdict on an event of `engineer` that has none yet (one conditional update: two reports
    at once cannot both count); None when there is no such event or it already has one."""
    collection = DownloadEvent.get_pymongo_collection()
    flt = {"_id": event_id, "engineer": engineer, "sha256_matches": None}
    result = await collection.update_one(flt, {"$set": {"sha256_matches": matches, "verified_at": now}})
    if not result.modified_count:
        return None
    return await find_one(DownloadEvent, {"_id": event_id})


def stale(cutoff: datetime) -> AsyncIterator[DownloadEvent]:
    """IN_PROGRESS events whose last heartbeat is older than `cutoff`."""
    flt = {"status": DownloadStatus.IN_PROGRESS.value, "heartbeat_at": {"$lt": cutoff}}
    return aiter(DownloadEvent.find(flt))


async def page(
    q: EventQuery, order: DownloadOrder, request: PageRequest, count_all: Any = None
) -> Page[DownloadEvent]:
    """One keyset page. Ordering by duration lists only finished downloads."""
    flt = event_filter(q)
    if order.field is DownloadOrderField.DURATION:
        flt = merge_filters(flt, {"duration_seconds": {"$ne": None}})
    return await keyset_page(
        DownloadEvent,
        flt,
        sort_of(order),
        order.key,
        request,
        newest_first_on="started_at",
        count_all=count_all,
    )


async def count_by_model(q: EventQuery, completes_only: bool = False) -> dict[str, int]:
    """Matching events (or only those that complete a download) per model name."""
    pipeline: list[Condition] = [
        {"$match": {**event_filter(q), **({"completes": True} if completes_only else {})}},
        {"$group": {"_id": "$model_name", "c": {"$sum": 1}}},
    ]
    rows = await DownloadEvent.get_pymongo_collection().aggregate(pipeline)
    return {r["_id"]: r["c"] async for r in rows if r["c"]}


def _count_if(status: DownloadStatus) -> Condition:
    return {"$sum": {"$cond": [{"$eq": ["$status", status.value]}, 1, 0]}}


_IS_DURATION = {"$isNumber": "$duration_seconds"}
# Bytes per second of a transfer with a duration and bytes; null (ignored by $percentile) for any other.
_THROUGHPUT: Condition = {
    "$cond": [
        {"$and": [{"$gt": ["$duration_seconds", 0]}, {"$gt": ["$bytes_sent", 0]}]},
        {"$divide": ["$bytes_sent", "$duration_seconds"]},
        None,
    ]
}
_COUNTED = ("downloads", "completed", "aborted", "failed", "verified", "mismatched")
# Per (group, engineer): the first of two groupings, so unique engineers are a count of sub-groups
# (`$addToSet` over a large group was some 8x slower on SecantusDB).
_PER_ENGINEER: Condition = {
    "downloads": {"$sum": 1},
    # Completed downloads, not COMPLETED transfers: see DownloadEvent.completes.
    "completed": {"$sum": {"$cond": [{"$eq": ["$completes", True]}, 1, 0]}},
    "aborted": _count_if(DownloadStatus.ABORTED),
    "failed": _count_if(DownloadStatus.FAILED),
    "verified": {"$sum": {"$cond": [{"$eq": ["$sha256_matches", True]}, 1, 0]}},
    "mismatched": {"$sum": {"$cond": [{"$eq": ["$sha256_matches", False]}, 1, 0]}},
    "total_bytes": {"$sum": "$bytes_sent"},
    "duration_sum": {"$sum": {"$cond": [_IS_DURATION, "$duration_seconds", 0]}},
    "duration_count": {"$sum": {"$cond": [_IS_DURATION, 1, 0]}},
    "max_duration": {"$max": "$duration_seconds"},
    "durations": {"$push": "$duration_seconds"},
    "throughputs": {"$push": _THROUGHPUT},
    # The engineer's distinct versions: the group's distinct (engineer, version) pairs add up from them.
    "versions": {"$addToSet": {"n": "$model_name", "v": "$model_version"}},
}
_PER_GROUP: Condition = {
    **{f: {"$sum": f"${f}"} for f in (*_COUNTED, "total_bytes")},
    "duration_sum": {"$sum": "$duration_sum"},
    "duration_count": {"$sum": "$duration_count"},
    "max_duration": {"$max": "$max_duration"},
    "unique_engineers": {"$sum": 1},
    "distinct_downloads": {"$sum": {"$size": "$versions"}},
    "durations": {"$push": "$durations"},
    "throughputs": {"$push": "$throughputs"},
}
_ALL_DURATIONS = {
    "$reduce": {"input": "$durations", "initialValue": [], "in": {"$concatArrays": ["$$value", "$$this"]}}
}
_ALL_THROUGHPUTS = {
    "$reduce": {"input": "$throughputs", "initialValue": [], "in": {"$concatArrays": ["$$value", "$$this"]}}
}
_ROW: Condition = {
    **{f: 1 for f in (*_COUNTED, "total_bytes", "max_duration")},
    "unique_engineers": 1,
    "distinct_downloads": 1,
    "avg_duration": SAFE_AVG,
    "percentiles": {"$percentile": {"input": _ALL_DURATIONS, "p": [0.5, 0.95], "method": "approximate"}},
    "throughput_percentiles": {
        "$percentile": {"input": _ALL_THROUGHPUTS, "p": [0.5, 0.95], "method": "approximate"}
    },
    "period_start": "$_id.period",
}


def stats_pipeline(req: StatsRequest) -> list[Condition]:
    """The whole aggregation over raw events in one pipeline, percentiles included (bench/analytics.py
    compares it; the app runs `stats`, the same figures in bounded pieces)."""
    key: Condition = {d.value: f"${DIMENSIONS[d]}" for d in req.group_by}
    if req.interval:
        key["period"] = trunc("$started_at", req.interval, req.tz)
    return [
        {"$match": event_filter(req.query)},
        {"$group": {"_id": {"k": key, "engineer": "$engineer"}, **_PER_ENGINEER}},
        {"$group": {"_id": "$_id.k", **_PER_GROUP}},
        {"$project": _ROW},
        {
            "$addFields": {
                "p50_duration": {"$arrayElemAt": ["$percentiles", 0]},
                "p95_duration": {"$arrayElemAt": ["$percentiles", 1]},
                "p50_throughput": {"$arrayElemAt": ["$throughput_percentiles", 0]},
                "p95_throughput": {"$arrayElemAt": ["$throughput_percentiles", 1]},
            }
        },
        *ordered_page(req),
    ]


def _piece_pipeline(req: StatsRequest, window: Condition) -> list[Condition]:
    """The first grouping of `stats_pipeline` over one time window: partial figures per (group, engineer)."""
    key: Condition = {d.value: f"${DIMENSIONS[d]}" for d in req.group_by}
    if req.interval:
        key["period"] = trunc("$started_at", req.interval, req.tz)
    return [
        {"$match": merge_filters(event_filter(req.query), window)},
        {"$group": {"_id": {"k": key, "engineer": "$engineer"}, **_PER_ENGINEER}},
    ]


_SUMMED = (*_COUNTED, "total_bytes", "duration_sum", "duration_count")
# The first piece of a scan covers this much time; each next one is sized from how long the last one took.
FIRST_PIECE = timedelta(hours=6)
MIN_PIECE = timedelta(minutes=1)


def _merge_partial(into: dict[tuple[Any, ...], dict[str, Any]], doc: dict[str, Any]) -> None:
    k = doc["_id"].get("k") or {}
    key = (tuple(sorted(k.items())), doc["_id"].get("engineer"))
    versions = {(v["n"], v["v"]) for v in doc["versions"]}
    have = into.get(key)
    if have is None:
        into[key] = {
            "k": k,
            **{f: doc[f] for f in (*_SUMMED, "max_duration")},
            "durations": doc["durations"],
            "throughputs": doc["throughputs"],
            "versions": versions,
        }
        return
    for f in _SUMMED:
        have[f] += doc[f]
    have["max_duration"] = _larger(have["max_duration"], doc["max_duration"])
    have["durations"] += doc["durations"]
    have["throughputs"] += doc["throughputs"]
    have["versions"] |= versions


def _larger(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b > a) else a


def _nearest_rank(ordered: list[float], p: float) -> float | None:
    return ordered[max(1, math.ceil(p * len(ordered))) - 1] if ordered else None


def _finish(partials: dict[tuple[Any, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group: the second grouping and the row projection of `stats_pipeline`, done here."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (key, _), part in partials.items():
        row = groups.get(key)
        if row is None:
            groups[key] = row = {"_id": part["k"], **{f: 0 for f in _SUMMED}, "max_duration": None}
            row.update(unique_engineers=0, distinct_downloads=0, durations=[], throughputs=[])
        for f in _SUMMED:
            row[f] += part[f]
        row["max_duration"] = _larger(row["max_duration"], part["max_duration"])
        row["unique_engineers"] += 1
        row["distinct_downloads"] += len(part["versions"])  # this engineer's distinct versions
        row["durations"] += [d for d in part["durations"] if isinstance(d, int | float)]
        row["throughputs"] += [t for t in part["throughputs"] if isinstance(t, int | float)]
    rows = []
    for row in groups.values():
        durations = sorted(row.pop("durations"))
        throughputs = sorted(row.pop("throughputs"))
        count = row["duration_count"]
        row["avg_duration"] = row["duration_sum"] / count if count else None
        row["p50_duration"], row["p95_duration"] = (
            _nearest_rank(durations, 0.5),
            _nearest_rank(durations, 0.95),
        )
        row["p50_throughput"], row["p95_throughput"] = (
            _nearest_rank(throughputs, 0.5),
            _nearest_rank(throughputs, 0.95),
        )
        row["period_start"] = row["_id"].get("period")
        rows.append(row)
    return rows


async def stats(req: StatsRequest, first: datetime | None) -> list[dict[str, Any]]:
    """Every stats row of `req` from raw events (`_id` holds the group key; metrics as in `METRIC_FIELDS`),
    unordered. `first` is no later than the earliest event (for a range without `since`).

    The scan runs in pieces: consecutive windows of `started_at`, each grouped by the database into partial
    figures per (group, engineer) and merged here, each sized from the last one's time to take about
    `limits.piece_seconds()` of database work. Between pieces the request's deadline is checked and other
    requests' pieces get their turn (`limits.scan_piece`); a piece carries the request's id (`comment`) so an
    abandoned request's piece can be killed (see db/work.py for why SecantusDB needs the pieces at all).
    Percentiles are nearest-rank, as the database's `$percentile` gives them on SecantusDB."""
    collection = DownloadEvent.get_pymongo_collection()
    since = req.query.since or first
    until = req.query.until or utcnow()
    target = piece_seconds()
    rid = work.request_id()
    partials: dict[tuple[Any, ...], dict[str, Any]] = {}
    windows: list[Condition] = []
    if since is None:  # nothing says where the events begin: one piece (no rollups to ask)
        windows.append({})
    start, width = since, FIRST_PIECE
    while True:
        if windows:
            window = windows.pop()
            end = None
        elif start is not None and start < until:
            end = until if until - start <= width else start + width  # no overflow near year 9999
            window = time_window("started_at", start, end)
        elif req.query.until is None and start is not None:
            window, end = time_window("started_at", start, None), None  # events stamped after now
            start = None
        else:
            break
        async with scan_piece():
            work.check_deadline()  # waiting for the slot may have taken the rest of the request's time
            began = time.monotonic()
            pipeline = _piece_pipeline(req, window)
            cursor = await collection.aggregate(pipeline, allowDiskUse=True, comment=rid)
            async for doc in cursor:
                _merge_partial(partials, doc)
            took = time.monotonic() - began
        if end is None:
            if since is None:
                break
            continue
        start = end
        width = max(MIN_PIECE, width * min(4.0, max(0.25, target / max(took, 1e-3))))
    return _finish(partials)


async def any_started(since: datetime, until: datetime) -> bool:
    """Whether any event started in [since, until) (an index range on `started_at`; meant for short, recent
    ranges: SecantusDB reads the whole range before a limit)."""
    window = {"started_at": {"$gte": since, "$lt": until}}
    found = await DownloadEvent.get_pymongo_collection().find_one(window, {"_id": 1})
    return found is not None


async def scan_documents(q: EventQuery, batch: int = 10_000) -> AsyncIterator[dict[str, Any]]:
    """Every event matching `q` as its stored document (see `scan` on projections)."""
    async for doc in DownloadEvent.get_pymongo_collection().find(event_filter(q), batch_size=batch):
        yield doc


async def scan(q: EventQuery, batch: int = 10_000) -> AsyncIterator[DownloadEvent]:
    """Every event matching `q`, lightly built (not validated), in batches.

    Whole documents, no projection: SecantusDB 0.7 applies a projection document by document after reading
    it, so projecting the 14 fields the rollups need made the read slower, not faster (1,450 events: 298 ms
    projected, 196 ms whole)."""
    async for doc in scan_documents(q, batch):
        yield DownloadEvent.model_construct(**{**doc, "id": doc["_id"]})


# Inserts, and updates that change the status: the transitions a live feed publishes (not heartbeats).
_TRANSITIONS: Condition = {
    "$match": {
        "$or": [
            {"operationType": "insert"},
            {"operationType": "update", "updateDescription.updatedFields.status": {"$exists": True}},
        ]
    }
}


@dataclass(frozen=True)
class Transition:
    """One status transition of an event, with the change stream's resume token."""

    token: dict[str, Any]
    status: DownloadStatus
    event: DownloadEvent


async def watch_transitions(resume_after: dict[str, Any] | None) -> AsyncIterator[Transition]:
    """Status transitions of download events from a MongoDB change stream (every writer, every instance),
    from now or from just after `resume_after`. `fullDocument` is looked up when the change is read, so
    it may be further along; `status` is the transition itself."""
    collection = DownloadEvent.get_pymongo_collection()
    async with await collection.watch(
        [_TRANSITIONS], full_document="updateLookup", resume_after=resume_after
    ) as stream:
        async for change in stream:
            doc = change.get("fullDocument")
            if doc is None:  # deleted since
                continue
            fields = change.get("updateDescription", {}).get("updatedFields", {})
            status = DownloadStatus(fields.get("status", doc["status"]))
            yield Transition(change["_id"], status, DownloadEvent.model_validate(doc))


async def versions_downloaded_since(since: datetime, project_names: list[str] | None) -> set[Any]:
    """The ids of the versions with a download (of any outcome) started at or after `since` (an index
    range on started_at, or on project and started_at)."""
    flt: Condition = {"started_at": {"$gte": since}}
    if project_names:
        flt["project_name"] = in_list(project_names)
    pipeline = [{"$match": flt}, {"$group": {"_id": "$model_id"}}]
    return {d["_id"] async for d in await DownloadEvent.get_pymongo_collection().aggregate(pipeline)}


async def last_download_of(version_ids: list[Any]) -> dict[Any, datetime]:
    """When each of these versions was last asked for (its newest event's start), where it ever was."""
    if not version_ids:
        return {}
    pipeline = [
        {"$match": {"model_id": in_list(version_ids)}},
        {"$group": {"_id": "$model_id", "last": {"$max": "$started_at"}}},
    ]
    rows = await DownloadEvent.get_pymongo_collection().aggregate(pipeline)
    return {d["_id"]: d["last"] async for d in rows}


async def downloaded_since(version_id: Any, since: datetime) -> bool:
    """Whether any download of the version started at or after `since`."""
    flt = {"model_id": version_id, "started_at": {"$gte": since}}
    return await DownloadEvent.get_pymongo_collection().find_one(flt, {"_id": 1}) is not None
