"""Reads of `download_events`: by id, pages, counts, scans, stages not folded yet, the change stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson
from pymongo.errors import OperationFailure

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
    q: EventQuery,
    order: DownloadOrder,
    request: PageRequest,
    count_all: Any = None,
    earliest: Callable[[], Awaitable[datetime | None]] | None = None,
) -> Page[DownloadEvent]:
    """One keyset page. Ordering by duration lists only finished downloads.

    By start time, the page is read in time windows (db/paging.py's `keyset_page`): SecantusDB 0.7 reads
    the whole index range of a find before it applies the limit (and a sort by the range's field with it),
    so an unbounded `started_at` range costs every matching event, whichever end the page is at. Newest
    first the windows grow back from now (or the cursor, or `until`); oldest first (ascending, or `last`
    rows of newest first, read ascending and turned round) they grow forward from the cursor, or `since`,
    or `earliest()` (about where the events begin: the rollups' first day, see analytics/events.py), since
    a probe for the earliest event is itself a read of every event on SecantusDB. A page after a cursor is
    read without a top-level `$or` (SecantusDB scans the collection for one): see `keyset_branches`. Before
    both, `last: 1`, the ascending order and every page after a cursor read all 200,000 events of the
    hostile-client test (6 to 12 s). On MongoDB each window is an index range read up to its limit: a few more
    small reads, the same rows."""
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
        earliest=earliest,
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

# How long a getMore on a quiet stream waits for a change before it answers with an empty batch (and its
# postBatchResumeToken): mongod's default for awaitData cursors, and SecantusDB's; said here so that a
# stream at the head of the history reports it (a `Head`) about once a second on either.
AWAIT_MS = 1000


@dataclass(frozen=True)
class Transition:
    """One status transition of an event, with the change stream's resume token."""

    token: dict[str, Any]
    status: DownloadStatus
    event: DownloadEvent


@dataclass(frozen=True)
class Head:
    """The stream has given every transition up to `token` and has none more for now: its
    postBatchResumeToken at the open, or after an empty batch (it is then at the head of the history)."""

    token: dict[str, Any]


async def watch_transitions(resume_after: dict[str, Any] | None) -> AsyncIterator[Transition | Head]:
    """Status transitions of download events from a MongoDB change stream (every writer, every instance),
    from now or from just after `resume_after`, and a `Head` whenever the stream has nothing more for now
    (at the open, and after each empty batch: about once every AWAIT_MS on a quiet collection).
    `fullDocument` is looked up when the change is read, so it may be further along; `status` is the
    transition itself."""
    collection = DownloadEvent.get_pymongo_collection()
    async with await collection.watch(
        [_TRANSITIONS], full_document="updateLookup", resume_after=resume_after, max_await_time_ms=AWAIT_MS
    ) as stream:
        # After the open, pymongo's resume_token is the reply's postBatchResumeToken when the first batch is
        # empty, else `resume_after` itself: either way, nothing up to it is still to come.
        if (token := stream.resume_token) is not None:
            yield Head(dict(token))
        while stream.alive:
            change = await stream.try_next()
            if change is None:  # an empty batch: resume_token is now its postBatchResumeToken
                if (token := stream.resume_token) is not None:
                    yield Head(dict(token))
                continue
            doc = change.get("fullDocument")
            if doc is None:  # deleted since
                continue
            fields = change.get("updateDescription", {}).get("updatedFields", {})
            status = DownloadStatus(fields.get("status", doc["status"]))
            yield Transition(change["_id"], status, DownloadEvent.model_validate(doc))


async def present() -> dict[str, Any] | None:
    """The head of the change history now: the postBatchResumeToken of a stream opened now (a `Head`'s
    token). One aggregate and one killCursors."""
    collection = DownloadEvent.get_pymongo_collection()
    async with await collection.watch([_TRANSITIONS]) as stream:
        token = stream.resume_token
    return None if token is None else dict(token)


@dataclass(frozen=True)
class Position:
    """Where a resume token stands in the change history, in the order the history is read: `key`s of the
    same `kind` compare bytewise (a token, a Head's token and an event's token alike).

    - `secantus` (SecantusDB 0.7): `_data` is the hex of a BSON document {s: oplog sequence number, t:
      cluster time, n: namespace, k: document key}, and the database resumes by `s` alone (it reads the oplog
      from s + 1; `t` plays no part), so `s` is the position; an event's token carries its own entry's `s`,
      a postBatchResumeToken the last entry the stream examined.
    - `mongodb` (a replica set, 4.2 or later): `_data` is the hex of a KeyString, made so that tokens sort
      bytewise in the order of the history (mongod compares them so itself) and a postBatchResumeToken sorts
      at or after the last event given. Its first byte is 130 (the KeyString type of a Timestamp) and the
      next 8 the cluster time, big-endian (seconds, then increment); `seconds` keeps those seconds.

    Any other token (a pre-4.2 BinData token, something made up) has no position: the feed then only joins
    on an exact token, as it always could."""

    kind: str
    key: bytes
    seconds: int | None = None

    def at_or_before(self, other: Position) -> bool:
        return self.kind == other.kind and self.key <= other.key


def position(token: Mapping[str, Any] | None) -> Position | None:
    """The position of a resume token (see Position), or None when it has none this code can tell."""
    data = token.get("_data") if token is not None else None
    if not isinstance(data, str):
        return None
    try:
        raw = bytes.fromhex(data)
    except ValueError:
        return None
    try:
        inner = bson.decode(raw)
    except Exception:  # not BSON: a KeyString (any error bson raises on such bytes means just that)
        inner = None
    if inner is not None:
        seq = inner.get("s")
        if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63:
            return Position("secantus", seq.to_bytes(8, "big"))
        return None
    if len(raw) >= 9 and raw[0] == 130:
        return Position("mongodb", raw, int.from_bytes(raw[1:5], "big"))
    return None


# How far a cursor's cluster time may be ahead of the database's present (on a replica set) before it is taken
# for one no stream gave: a member that lags the one a cursor came from, and clocks, stay well within it.
FUTURE_SLACK_SECONDS = 60


def beyond(cursor: Position, now: Position) -> bool:
    """Whether `cursor` is past the database's present `now` (a Head's position, from `present`), so that no
    stream of this database gave it: on SecantusDB a sequence number the oplog has not reached (one
    database, one counter: exact), on a replica set a cluster time more than FUTURE_SLACK_SECONDS ahead (a
    cursor from a member ahead of the one `now` came from may be a little past it). False when the two cannot
    be compared (the database will judge the cursor itself)."""
    if cursor.kind != now.kind:
        return False
    if cursor.kind == "secantus":
        return cursor.key > now.key
    assert cursor.seconds is not None and now.seconds is not None
    return cursor.seconds > now.seconds + FUTURE_SLACK_SECONDS


# Server errors that say a resume token itself was refused, when a change stream opens (or reads its first
# batch) with it: they are the client's cursor's fault, not the server's. mongod: 9 FailedToParse ("resume
# token string was not a valid hex string"), 40647 "Bad resume token", 40649 "invalid empty resume token",
# 50796/50854 (no version, wrong type of version), 50811 "KeyString format error", 260 InvalidResumeToken,
# 280 ChangeStreamFatalError ("the resume token was not found", on the first getMore); SecantusDB: 9 (not hex,
# not BSON, no timestamp), 260, and 13 Unauthorized for a token of another namespace (matched by its message,
# as 13 on mongod means the app's own user lacks a privilege: that must stay a logged server error).
_TOKEN_REFUSED = frozenset({9, 260, 280, 40647, 40649, 50796, 50811, 50854})
# The token is genuine but older than the history the database keeps (a replica set's oplog window).
HISTORY_LOST = 286


def refused_token(exc: BaseException) -> int | None:
    """The error code when `exc` is the database refusing a resume token (see above: 286 for one older than
    its history), else None."""
    if not isinstance(exc, OperationFailure) or exc.code is None:
        return None
    if exc.code in _TOKEN_REFUSED or exc.code == HISTORY_LOST:
        return exc.code
    if exc.code == 13 and "resume token" in str(exc).lower():
        return exc.code
    return None


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
