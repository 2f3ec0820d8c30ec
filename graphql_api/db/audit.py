"""Owner of `audit_events` and `audit_principals`: the append-only audit trail and the principals it has
seen sign in.

Insert-only: this module offers no update and no delete of a record; the only deletion is the trail's own
retention (MODELHUB_AUDIT_RETENTION_DAYS), by the database's TTL monitor on `at`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beanie import SortDirection
from pymongo.errors import DuplicateKeyError

from ..documents import AuditEvent
from ..pagination import Page, PageRequest
from .common import Condition, ensure_ttl, ttl_seconds
from .paging import keyset_page

RETENTION_INDEX = "at_ttl"
PRINCIPALS = "audit_principals"
_SORT = [("at", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)]


@dataclass(frozen=True)
class AuditFilter:
    """Which records: each set field must match (`since` inclusive, `until` exclusive)."""

    principal: str | None = None
    action: str | None = None
    project: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _condition(flt: AuditFilter, projects: Collection[str] | None) -> Condition:
    """The MongoDB filter; `projects` (when not None) keeps only records about those projects."""
    cond: Condition = {}
    for name in ("principal", "action", "outcome"):
        value = getattr(flt, name)
        if value is not None:
            cond[name] = value
    if projects is not None:
        wanted = [p for p in projects if flt.project in (None, p)]
        cond["project"] = {"$in": sorted(wanted)}
    elif flt.project is not None:
        cond["project"] = flt.project
    window: Condition = {}
    if flt.since is not None:
        window["$gte"] = flt.since
    if flt.until is not None:
        window["$lt"] = flt.until
    if window:
        cond["at"] = window
    return cond


async def insert(record: AuditEvent) -> None:
    await AuditEvent.get_pymongo_collection().insert_one(_document(record))


async def insert_many(records: Sequence[AuditEvent]) -> None:
    """One insert for the batch. A string no UTF-8 holds (a lone surrogate: the request edges refuse them,
    but a record may quote any text) fails the encoding of the whole command before anything is sent: the
    batch is then written again with such characters replaced, so one record never costs the others."""
    if not records:
        return
    collection = AuditEvent.get_pymongo_collection()
    docs = [_document(r) for r in records]
    try:
        await collection.insert_many(docs, ordered=False)
    except UnicodeEncodeError:
        await collection.insert_many([_encodable(doc) for doc in docs], ordered=False)


def _encodable(value: Any) -> Any:
    """`value` with every string UTF-8 can hold (a lone surrogate becomes "?")."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value


def _document(record: AuditEvent) -> dict[str, Any]:
    doc: dict[str, Any] = record.model_dump(by_alias=True, exclude={"id", "revision_id"})
    if record.id is not None:
        doc["_id"] = record.id
    return doc


async def first_sight(principal: str, at: datetime, retention_days: int) -> bool:
    """Whether `principal` is seen here for the first time (kept as long as the trail: after that, a
    sign-in counts as a first one again). Two instances seeing it at once agree: one insert wins."""
    collection = AuditEvent.get_pymongo_collection().database[PRINCIPALS]
    try:
        await collection.insert_one({"_id": principal, "first_seen_at": at})
    except DuplicateKeyError:
        return False
    return True


async def page(flt: AuditFilter, request: PageRequest, projects: Collection[str] | None) -> Page[AuditEvent]:
    """One page, newest first."""
    return await keyset_page(
        AuditEvent, _condition(flt, projects), list(_SORT), "audit_at", request, newest_first_on="at"
    )


async def ensure_retention(days: int) -> None:
    """Records (and first sightings) expire `days` after they were written: TTL indexes, created at start
    and changed in place when the setting changes (see db/common.ensure_ttl; SecantusDB 0.7 sweeps TTL
    indexes every 60 s as MongoDB does)."""
    collection = AuditEvent.get_pymongo_collection()
    # Every record has a transport; no query constrains it (see ensure_ttl on why the index is partial).
    await ensure_ttl(collection, "at", RETENTION_INDEX, days * 86_400, {"transport": {"$gte": ""}})
    await ensure_ttl(collection.database[PRINCIPALS], "first_seen_at", RETENTION_INDEX, days * 86_400)


async def retention_seconds() -> int | None:
    return await ttl_seconds(AuditEvent.get_pymongo_collection(), RETENTION_INDEX)
