"""Owner of `download_events`: inserts, state transitions, pages, and the raw stats scan (in pieces)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beanie import PydanticObjectId, SortDirection
from beanie.odm.utils.dump import get_dict
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from .. import figures
from ..documents import DownloadEvent, DownloadStatus, RollupStage, utcnow
from ..figures import FigureMismatch, FilterForm, Finish, Merge
from ..limits import piece_seconds
from ..pagination import Page, PageRequest
from ..queries import Dimension, DownloadOrder, DownloadOrderField, EventQuery, StatsRequest
from . import work
from .batching import GroupCommit
from .common import (
    DUPLICATE_KEY,
    Condition,
    Translator,
    any_of,
    bound,
    ensure_ttl,
    find_one,
    in_list,
    merge_filters,
    ordered_page,
    time_window,
    translate,
    trunc,
    ttl_seconds,
)
from .paging import Sort, keyset_page


def _any_of_or_none(field: str) -> Translator:
    """Listed values, None meaning "no value" (a missing or null field, as `$in` matches it)."""

    def translated(values: list[Any]) -> Condition:
        named = sorted({v for v in values if v is not None})
        if None not in values:
            return {field: in_list(named)}
        return {field: {"$in": [None, *named]}}

    return translated


_FORMS: dict[FilterForm, Callable[[str], Translator]] = {
    FilterForm.ANY_OF: any_of,
    FilterForm.ANY_OF_OR_NONE: _any_of_or_none,
}
# The dimensions' filters (figures.DIMENSIONS), then the range and size.
FILTERS: Mapping[str, Translator] = {
    **{d.filter: _FORMS[d.form](d.event) for d in figures.DIMENSIONS if d.filter},
    "since": bound("started_at", "$gte"),
    "until": bound("started_at", "$lt"),
    "min_bytes": bound("bytes_sent", "$gte"),
}

# Dimension → the event field it groups by (declared in figures.DIMENSIONS).
DIMENSIONS: dict[Dimension, str] = {Dimension(d.name): d.event for d in figures.DIMENSIONS}

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


async def insert_many(events: list[dict[str, Any]]) -> None:
    """Bulk insert of already-built event documents (demo data)."""
    await DownloadEvent.get_pymongo_collection().insert_many(events, ordered=False)


async def count_all() -> int:
    return int(await DownloadEvent.get_pymongo_collection().estimated_document_count())


async def get(event_id: Any) -> DownloadEvent | None:
    return await find_one(DownloadEvent, {"_id": event_id})


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


async def _apply(
    flt: Condition, update: Condition, transition_id: str, staged: datetime | None = None
) -> bool:
    """One atomic conditional update: True when it is recorded (now, or by an earlier attempt with the same
    `transition_id` whose acknowledgement was lost), False when `flt` no longer matches the event because
    another change came first. `staged`: the change owes the rollups its `finished` stage. The event is
    read only when the update changed nothing (to tell a retry of this change from another change)."""
    collection = DownloadEvent.get_pymongo_collection()
    result = await collection.update_one(flt, _change(update, transition_id, staged))
    if result.modified_count:
        return True
    mine = await collection.find_one({"_id": flt["_id"], "transition_id": transition_id}, {"_id": 1})
    return mine is not None


async def _transition(
    flt: Condition, update: Condition, transition_id: str, staged: datetime | None = None
) -> DownloadEvent | None:
    """`_apply`, then the event as the change left it (None when another change came first).

    An update_one and a read by _id rather than one findAndModify: SecantusDB 0.7 scans the whole
    collection for a findAndModify (tens of ms at a few thousand documents), while both of these use an index.
    """
    if not await _apply(flt, update, transition_id, staged):
        return None
    return await find_one(DownloadEvent, {"_id": flt["_id"]})


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

    def __init__(self, on_flush: Callable[[str, int], None] | None = None) -> None:
        def told(write: str) -> Callable[[int], None] | None:
            return None if on_flush is None else (lambda size: on_flush(write, size))

        self._inserts: GroupCommit[DownloadEvent, bool] = GroupCommit(_insert_many, on_flush=told("insert"))
        self._finishes: GroupCommit[EventFinish, bool] = GroupCommit(_finish_many, on_flush=told("finish"))

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


def staged_after(watermark: datetime) -> AsyncIterator[dict[str, Any]]:
    """The stored events with a rollup stage staged after `watermark` (an index range on `staged_at`: the
    events of the last seconds, not yet folded into the rollups)."""
    return aiter(DownloadEvent.get_pymongo_collection().find({"staged_at": {"$gt": watermark}}))


def matches(q: EventQuery, doc: Mapping[str, Any]) -> bool:
    """Whether a stored event matches `q`, decided here as `event_filter(q)` would in the database (the
    readers of the rollups filter the few events not folded yet this way)."""
    for d in figures.DIMENSIONS:
        wanted = getattr(q, d.filter) if d.filter else None
        if not wanted:
            continue
        values = {getattr(v, "value", v) for v in wanted}
        if doc.get(d.event) not in values:
            return False
    started = doc["started_at"]
    if (q.since is not None and started < q.since) or (q.until is not None and started >= q.until):
        return False
    return q.min_bytes is None or (doc.get("bytes_sent") or 0) >= q.min_bytes


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


# The first grouping, per (group, engineer), so unique engineers are a count of sub-groups (`$addToSet`
# over a large group was some 8x slower on SecantusDB): every partial of figures.PARTIALS.
_PER_ENGINEER: Condition = {p.name: p.accumulator for p in figures.PARTIALS}
_SPREAD = (Merge.SUM, Merge.MAX, Merge.CONCAT)  # partials the second grouping merges as they are


def _per_group() -> Condition:
    """The second grouping: the engineers' partials merged, and the figures only a whole group makes."""
    merge = {Merge.SUM: "$sum", Merge.MAX: "$max", Merge.CONCAT: "$push"}
    out: Condition = {p.name: {merge[p.merge]: f"${p.name}"} for p in figures.PARTIALS if p.merge in _SPREAD}
    for f in figures.FIGURES:
        if f.raw.finish is Finish.GROUPS:
            out[f.name] = {"$sum": 1}
        elif f.raw.finish is Finish.SIZE:
            out[f.name] = {"$sum": {"$size": f"${f.raw.of[0]}"}}
    return out


def _concatenated(name: str) -> Condition:
    return {
        "$reduce": {"input": f"${name}", "initialValue": [], "in": {"$concatArrays": ["$$value", "$$this"]}}
    }


def _finished(figure: figures.Figure) -> Any:
    """The row projection's expression of a figure, from the second grouping's fields."""
    made = figure.raw
    if made.finish is Finish.VALUE:
        return 1 if made.of[0] == figure.name else f"${made.of[0]}"
    if made.finish is Finish.MEAN:
        total, count = made.of
        return {"$cond": [{"$gt": [f"${count}", 0]}, {"$divide": [f"${total}", f"${count}"]}, None]}
    if made.finish is Finish.PERCENTILE:  # picked from the list's percentiles (_PERCENTILES)
        ps = _percentiles_of(made.of[0])
        return {"$arrayElemAt": [f"$_p_{made.of[0]}", ps.index(made.p)]}
    return f"${figure.name}"  # GROUPS, SIZE: made by the second grouping


def _percentiles_of(partial: str) -> list[float]:
    """Every percentile the figures read of one listed partial, in declaration order."""
    found = [f.raw.p for f in figures.FIGURES if f.raw.finish is Finish.PERCENTILE and f.raw.of[0] == partial]
    return list(dict.fromkeys(found))


_PER_GROUP = _per_group()
# Each listed partial's percentiles in one `$percentile` (the lists are concatenated once), as `_p_<name>`.
_LISTED = list(dict.fromkeys(f.raw.of[0] for f in figures.FIGURES if f.raw.finish is Finish.PERCENTILE))
_PERCENTILES: Condition = {
    f"_p_{name}": {
        "$percentile": {"input": _concatenated(name), "p": _percentiles_of(name), "method": "approximate"}
    }
    for name in _LISTED
}
_ROW: Condition = {**{f.name: _finished(f) for f in figures.FIGURES}, "period_start": "$_id.period"}


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
        {"$addFields": _PERCENTILES},
        {"$project": _ROW},
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


# The first piece of a scan covers this much time; each next one is sized from how long the last one took.
FIRST_PIECE = timedelta(hours=6)
MIN_PIECE = timedelta(minutes=1)


def _hashable(value: Any) -> Any:
    """A UNION partial's member as a set element (documents become sorted item tuples)."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def _merge_partial(into: dict[tuple[Any, ...], dict[str, Any]], doc: dict[str, Any]) -> None:
    """Adds one piece's partial figures of a (group, engineer) to those of earlier pieces."""
    k = doc["_id"].get("k") or {}
    key = (tuple(sorted(k.items())), doc["_id"].get("engineer"))
    have = into.get(key)
    if have is None:
        into[key] = have = {"k": k}
        for p in figures.PARTIALS:
            value = doc[p.name]
            have[p.name] = {_hashable(v) for v in value} if p.merge is Merge.UNION else value
        return
    for p in figures.PARTIALS:
        have[p.name] = _merged(p.merge, have[p.name], doc[p.name])


def _merged(merge: Merge, have: Any, value: Any) -> Any:
    if merge is Merge.SUM:
        return have + value
    if merge is Merge.MAX:
        return _larger(have, value)
    if merge is Merge.CONCAT:
        have.extend(value)  # in place: a long scan merges many pieces into one list
        return have
    return have | {_hashable(v) for v in value}


def _larger(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b > a) else a


def _nearest_rank(ordered: list[float], p: float) -> float | None:
    return ordered[max(1, math.ceil(p * len(ordered))) - 1] if ordered else None


def _empty(merge: Merge) -> Any:
    """A group's value before its first engineer: a UNION partial is kept as the summed set sizes."""
    return {Merge.SUM: 0, Merge.MAX: None, Merge.CONCAT: []}.get(merge, 0)


_GROUPS = "__engineers"


def _finish(partials: dict[tuple[Any, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group: the second grouping and the row projection of `stats_pipeline`, done here. A UNION
    partial is kept as the summed sizes of its engineers' sets (their members differ by engineer)."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (key, _), part in partials.items():
        group = groups.get(key)
        if group is None:
            groups[key] = group = {"k": part["k"], _GROUPS: 0}
            group.update({p.name: _empty(p.merge) for p in figures.PARTIALS})
        group[_GROUPS] += 1
        for p in figures.PARTIALS:
            value = part[p.name]
            if p.merge is Merge.UNION:
                group[p.name] += len(value)
            elif p.merge is Merge.CONCAT:
                group[p.name] += [v for v in value if isinstance(v, int | float)]
            else:
                group[p.name] = _merged(p.merge, group[p.name], value)
    return [_row_of(group) for group in groups.values()]


def _row_of(group: dict[str, Any]) -> dict[str, Any]:
    """A group's raw row: its key (`_id`), `period_start` and every figure as figures.FIGURES finish it."""
    row: dict[str, Any] = {"_id": group["k"], "period_start": group["k"].get("period")}
    for f in figures.FIGURES:
        made = f.raw
        if made.finish is Finish.VALUE or made.finish is Finish.SIZE:
            row[f.name] = group[made.of[0]]
        elif made.finish is Finish.MEAN:
            total, count = (group[name] for name in made.of)
            row[f.name] = total / count if count else None
        elif made.finish is Finish.PERCENTILE:
            row[f.name] = _nearest_rank(sorted(group[made.of[0]]), made.p)
        elif made.finish is Finish.GROUPS:
            row[f.name] = group[_GROUPS]
        else:
            raise FigureMismatch(f"figure {f.name}: raw events cannot finish {made.finish}")
    return row


async def stats(req: StatsRequest, first: datetime | None) -> list[dict[str, Any]]:
    """Every stats row of `req` from raw events (`_id` holds the group key; metrics as in `METRIC_FIELDS`),
    unordered. `first` is no later than the earliest event (for a range without `since`).

    The scan runs in pieces: consecutive windows of `started_at`, each grouped by the database into partial
    figures per (group, engineer) and merged here, each sized from the last one's time to take about
    `limits.piece_seconds()` of database work. Between pieces the request's deadline is checked and other
    requests' pieces get their turn (`work.piece`); a piece carries the request's id (`comment`) so an
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
        pipeline = _piece_pipeline(req, window)

        async def read(ms: int | None, pipeline: list[Condition] = pipeline) -> tuple[list[Any], float]:
            began = time.monotonic()
            options: dict[str, Any] = {"allowDiskUse": True, **_max_time(ms)}
            cursor = await collection.aggregate(pipeline, comment=rid, **options)
            return [doc async for doc in cursor], time.monotonic() - began

        docs, took = await work.piece(read)
        for doc in docs:
            _merge_partial(partials, doc)
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


def _max_time(max_time_ms: int | None) -> dict[str, int]:
    return {} if max_time_ms is None else {"maxTimeMS": max_time_ms}


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
