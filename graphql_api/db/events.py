"""Owner of `download_events`: inserts, state transitions, pages, and the raw stats pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId, SortDirection

from ..documents import DownloadEvent, DownloadStatus
from ..pagination import Page, PageRequest
from ..queries import Dimension, DownloadOrder, DownloadOrderField, EventQuery, StatsRequest
from .common import (
    SAFE_AVG,
    Condition,
    Translator,
    any_of,
    bound,
    find_one,
    in_list,
    insert_once,
    merge_filters,
    ordered_page,
    read_page,
    translate,
    trunc,
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
# Per (group, engineer): the first of two groupings, so unique engineers are a count of sub-groups
# (`$addToSet` over a large group was some 8x slower on SecantusDB).
_PER_ENGINEER: Condition = {
    "downloads": {"$sum": 1},
    # Completed downloads, not COMPLETED transfers: see DownloadEvent.completes.
    "completed": {"$sum": {"$cond": [{"$eq": ["$completes", True]}, 1, 0]}},
    "aborted": _count_if(DownloadStatus.ABORTED),
    "failed": _count_if(DownloadStatus.FAILED),
    "total_bytes": {"$sum": "$bytes_sent"},
    "duration_sum": {"$sum": {"$cond": [_IS_DURATION, "$duration_seconds", 0]}},
    "duration_count": {"$sum": {"$cond": [_IS_DURATION, 1, 0]}},
    "max_duration": {"$max": "$duration_seconds"},
    "durations": {"$push": "$duration_seconds"},
}
_PER_GROUP: Condition = {
    **{f: {"$sum": f"${f}"} for f in ("downloads", "completed", "aborted", "failed", "total_bytes")},
    "duration_sum": {"$sum": "$duration_sum"},
    "duration_count": {"$sum": "$duration_count"},
    "max_duration": {"$max": "$max_duration"},
    "unique_engineers": {"$sum": 1},
    "durations": {"$push": "$durations"},
}
_ALL_DURATIONS = {
    "$reduce": {"input": "$durations", "initialValue": [], "in": {"$concatArrays": ["$$value", "$$this"]}}
}
_ROW: Condition = {
    **{f: 1 for f in ("downloads", "completed", "aborted", "failed", "total_bytes", "max_duration")},
    "unique_engineers": 1,
    "avg_duration": SAFE_AVG,
    "percentiles": {"$percentile": {"input": _ALL_DURATIONS, "p": [0.5, 0.95], "method": "approximate"}},
    "period_start": "$_id.period",
}


def stats_pipeline(req: StatsRequest) -> list[Condition]:
    """The whole aggregation over raw events, percentiles included; nothing but result rows leaves Mongo."""
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
            }
        },
        *ordered_page(req),
    ]


async def stats(req: StatsRequest) -> tuple[list[dict[str, Any]], int]:
    """Stats rows from raw events: `_id` holds the group key; metrics as named in `METRIC_FIELDS`."""
    docs = await DownloadEvent.get_pymongo_collection().aggregate(stats_pipeline(req), allowDiskUse=True)
    return await read_page(docs)


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
