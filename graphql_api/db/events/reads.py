"""Reads of `download_events`: by id, pages, counts, scans, stages not folded yet, the change stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...documents import DownloadEvent, DownloadStatus
from ...pagination import Page, PageRequest
from ...queries import DownloadOrder, DownloadOrderField, EventQuery
from .. import work
from ..common import Condition, find_one, in_list, merge_filters
from ..paging import keyset_page
from .filters import event_filter, sort_of


async def count_all() -> int:
    return int(await DownloadEvent.get_pymongo_collection().estimated_document_count())


async def get(event_id: Any) -> DownloadEvent | None:
    return await find_one(DownloadEvent, {"_id": event_id})


def staged_after(watermark: datetime) -> AsyncIterator[dict[str, Any]]:
    """The stored events with a rollup stage staged after `watermark` (an index range on `staged_at`: the
    events of the last seconds, not yet folded into the rollups)."""
    return aiter(DownloadEvent.get_pymongo_collection().find({"staged_at": {"$gt": watermark}}))


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


async def any_started(since: datetime, until: datetime) -> bool:
    """Whether any event started in [since, until) (an index range on `started_at`; meant for short, recent
    ranges: SecantusDB reads the whole range before a limit)."""
    window = {"started_at": {"$gte": since, "$lt": until}}
    found = await DownloadEvent.get_pymongo_collection().find_one(window, {"_id": 1})
    return found is not None


async def edge_documents(q: EventQuery) -> list[dict[str, Any]]:
    """Every event matching `q` as its stored document, read as one piece of a raw scan (`work.piece`: a
    slot, the request's deadline, its id): for short ranges (a stats range's raw edges, at most an hour)."""
    rid = work.request_id()
    collection = DownloadEvent.get_pymongo_collection()

    async def read(ms: int | None) -> list[dict[str, Any]]:
        bounded = {} if ms is None else {"max_time_ms": ms}
        found = collection.find(event_filter(q), batch_size=10_000, comment=rid, **bounded)
        return [doc async for doc in found]

    return await work.piece(read)


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
