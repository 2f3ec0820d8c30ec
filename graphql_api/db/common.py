"""Filter and pipeline building blocks shared by the collection owners, with SecantusDB's planning rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from beanie import Document, PydanticObjectId
from pymongo.errors import DuplicateKeyError

from ..queries import METRIC_FIELDS, Interval, StatsRequest

Condition = dict[str, Any]
# A translator turns one set filter value into conditions, or None when the collection cannot express it.
Translator = Callable[[Any], Condition | None]

DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index refusing a write
_LOWER = {"$gt", "$gte"}
_UPPER = {"$lt", "$lte"}


def _tighter(op: str, a: Any, b: Any) -> Any:
    return max(a, b) if op in _LOWER else min(a, b)


def _is_range(cond: Any) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(op in _LOWER | _UPPER for op in cond)


def merge_filters(*filters: Mapping[str, Any]) -> Condition:
    """The conjunction of filters as one flat document where possible.

    SecantusDB plans no index for a top-level `$and` (a 1M-event collection scan took 28 s where the flat
    filter took 50 ms), so range conditions on one field are merged instead: `{"t": {"$gte": a}}` and
    `{"t": {"$gte": b, "$lt": c}}` become `{"t": {"$gte": max(a, b), "$lt": c}}`.
    """
    merged: Condition = {}
    rest: list[Condition] = []
    for flt in filters:
        for key, cond in flt.items():
            if key not in merged:
                merged[key] = cond
                continue
            mine = merged[key]
            if not (_is_range(mine) and _is_range(cond)):
                rest.append({key: cond})
                continue
            combined = dict(mine)
            for op, value in cond.items():
                combined[op] = _tighter(op, combined[op], value) if op in combined else value
            merged[key] = combined
    if rest:
        merged = {"$and": [merged, *rest]}
    return merged


D = TypeVar("D", bound=Document)


async def find_one(document: type[D], flt: Condition) -> D | None:
    """One document by a filter, validated with the model's own (cached) validator.

    Beanie's `Document.get` turns an id that is not already a PydanticObjectId (a plain bson ObjectId, as
    tickets and global ids give) through a new pydantic TypeAdapter on every call; reading by filter avoids
    that, and the owners use this one helper for their single-document reads by filter. (It did not change
    registration latency, which the embedded DB's fsyncs decide.)
    """
    doc = await document.get_pymongo_collection().find_one(flt)
    return None if doc is None else document.model_validate(doc)


def object_filter(bucket: str, key: str) -> Condition:
    """Documents locating this object (versions, uploads): their bucket_key index answers it."""
    return {"bucket": bucket, "key": key}


async def used_outside(document: type[Document], bucket: str, key: str, writable: Collection[str]) -> bool:
    """Whether a document of `document` (a version, an upload) locates this object for a project not among
    `writable`: the object's few documents, read off the collection's bucket_key index.

    SecantusDB quirk: SecantusDB 0.7 plans no index for a filter holding a negation (`project_name` `$nin`
    or `$ne` beside the bucket and key made it a collection scan), so the projects are compared here; the
    same on MongoDB."""
    found = document.get_pymongo_collection().find(object_filter(bucket, key), {"project_name": 1, "_id": 0})
    return any(doc.get("project_name") not in writable for doc in await found.to_list())


async def insert_once(doc: Document) -> bool:
    """Inserts `doc` (its `_id` chosen client-side); True when it is now stored, False when a *different*
    document holds one of its unique keys. A retried insert whose first attempt was written (the driver
    retries after a lost acknowledgement) finds its own `_id` and counts as done, not as a duplicate."""
    if doc.id is None:
        doc.id = PydanticObjectId()
    try:
        await doc.insert()
    except DuplicateKeyError:
        mine = await type(doc).get_pymongo_collection().find_one({"_id": doc.id}, {"_id": 1})
        return mine is not None
    return True


def is_set(value: Any) -> bool:
    return value is not None and value != []


def translate(query: Any, table: Mapping[str, Translator]) -> Condition | None:
    """The filter for a dataclass `query` by a table of per-field translators.

    Completeness is built in: a set field with no translator, or one its translator cannot express, makes
    the whole translation None ("this collection cannot answer"), so a new filter field can never be
    silently dropped.
    """
    parts: list[Condition] = []
    for f in dataclasses.fields(query):
        value = getattr(query, f.name)
        if not is_set(value):
            continue
        translator = table.get(f.name)
        cond = translator(value) if translator is not None else None
        if cond is None:
            return None
        parts.append(cond)
    return merge_filters(*parts)


def value_of(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def in_list(values: list[Any]) -> Any:
    """A `$in` condition (equality for one value, which plans better), its values sorted and distinct.

    Sorted because SecantusDB 0.7 scans an index for `$in` value by value in the list's order and then
    trusts that order for a sort on the same field: `{name: {$in: ["b", "a"]}}` sorted by name came back
    b, a. With the list sorted ascending, both directions come back right.
    """
    plain = sorted({value_of(v) for v in values})
    return plain[0] if len(plain) == 1 else {"$in": plain}


def any_of(field: str) -> Translator:
    """Matches any of a list of values."""
    return lambda values: {field: in_list(values)}


def bound(field: str, op: str) -> Translator:
    return lambda value: {field: {op: value}}


def trunc(date_expr: Any, interval: Interval, tz: str) -> Condition:
    spec: Condition = {"date": date_expr, "unit": interval.value.lower(), "timezone": tz}
    if interval is Interval.WEEK:
        spec["startOfWeek"] = "monday"
    return {"$dateTrunc": spec}


SAFE_AVG: Condition = {
    "$cond": [{"$gt": ["$duration_count", 0]}, {"$divide": ["$duration_sum", "$duration_count"]}, None]
}


def ordered_page(req: StatsRequest, period: str = "period_start") -> list[Condition]:
    """Sort by the requested metric, ties broken on the group key (a stable order), then one page of
    `req.limit` rows from `req.offset`, beside the number of all rows: `{rows: [...], total: [{n}]}`.
    `period` is where the rows hold their period start."""
    direction = -1 if req.descending else 1
    metric = METRIC_FIELDS[req.sort_metric]
    sort: dict[str, int] = {period if metric == "period_start" else metric: direction}
    sort.update({f"_id.{d.value}": 1 for d in req.group_by})
    if req.interval:
        sort.setdefault(period, 1)
    rows: list[Condition] = [{"$sort": sort}, {"$skip": req.offset}, {"$limit": req.limit}]
    return [{"$facet": {"rows": rows, "total": [{"$count": "n"}]}}]


async def read_page(cursor: Any) -> tuple[list[dict[str, Any]], int]:
    """The rows and the total of an aggregation that ended in `ordered_page`."""
    (out,) = await cursor.to_list()
    total = out["total"][0]["n"] if out["total"] else 0
    return list(out["rows"]), int(total)


def time_window(field: str, since: datetime | None, until: datetime | None) -> Condition:
    rng: Condition = {}
    if since:
        rng["$gte"] = since
    if until:
        rng["$lt"] = until
    return {field: rng} if rng else {}


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


async def ensure_ttl(
    collection: Any, field: str, name: str, seconds: int, partial: Condition | None = None
) -> None:
    """A TTL index `name` on `field` deleting documents `seconds` after that time: created when missing,
    its `expireAfterSeconds` changed in place (collMod) when the setting changed, so a restart with a new
    retention applies it without rebuilding the index (rebuilt only when `partial` changed).

    `partial` (a filter every document matches, on a field no query constrains) keeps the planner off the
    TTL index. SecantusDB quirk: SecantusDB 0.7's planner picks a plain single-field index on a time over the
    compound (time, _id) index that pages need, even for a sorted find; a partial index is only considered
    for queries that imply its filter, so with one it keeps to the compound index (so does MongoDB's). Both
    honour the TTL of a partial index."""
    async for index in await collection.list_indexes():
        if index["name"] != name:
            continue
        if _plain(index.get("partialFilterExpression")) != _plain(partial):
            await collection.drop_index(name)
            break
        if index.get("expireAfterSeconds") != seconds:
            await collection.database.command(
                {"collMod": collection.name, "index": {"name": name, "expireAfterSeconds": seconds}}
            )
        return
    options: dict[str, Any] = {"partialFilterExpression": partial} if partial else {}
    await collection.create_index([(field, 1)], name=name, expireAfterSeconds=seconds, **options)


def _plain(value: Any) -> Any:
    """An index option as plain dicts (the server returns SON), for comparison."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


async def ttl_seconds(collection: Any, name: str) -> int | None:
    """The `expireAfterSeconds` of the index `name`, or None when there is no such index or option."""
    async for index in await collection.list_indexes():
        if index["name"] == name:
            value = index.get("expireAfterSeconds")
            return int(value) if value is not None else None
    return None
