"""Owner of `webhook_deliveries` (the outbox while PENDING, the history after), `stream_cursors` (where the
webhook dispatcher stands in the database's change stream), and the change stream it reads.

Why a change stream and not a write beside each record: versions, alias moves and download events are written
by several use cases, the CLI and other instances, and MongoDB offers no transaction on SecantusDB. One
database-wide change stream sees every one of those writes, in one order, and its resume token is stored in
`stream_cursors` after the deliveries it produced are written: a crash in between replays the changes, and
each replayed change derives the same delivery `_id`s, so nothing is lost and nothing is inserted twice.

SecantusDB 0.7 supports database-wide `watch`, `startAfter`, `fullDocument: updateLookup` and keeps its
change history across restarts; a real replica set keeps it for its oplog window. A stored token older than
that window cannot be resumed from (MongoDB's ChangeStreamHistoryLost): the reader logs it and starts from
now, the one case where events are lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from beanie import PydanticObjectId, SortDirection
from pymongo.errors import BulkWriteError

from ..documents import (
    AliasChange,
    DeliveryStatus,
    DownloadEvent,
    DownloadStatus,
    ModelVersion,
    StreamCursor,
    Webhook,
    WebhookDelivery,
)
from ..pagination import Page, PageRequest
from .common import Condition, find_one, insert_once
from .paging import keyset_page

VERSIONS = ModelVersion.Settings.name
ALIAS_CHANGES = AliasChange.Settings.name
DOWNLOADS = DownloadEvent.Settings.name
WEBHOOKS = Webhook.Settings.name
# Download statuses that produce webhook events; heartbeats and progress never reach the reader.
DOWNLOAD_OUTCOMES = [DownloadStatus.COMPLETED.value, DownloadStatus.FAILED.value]

_CHANGES: Condition = {
    "$match": {
        "$or": [
            # A webhook's own changes are in the same order as the events: one created before an event
            # receives it, one deleted or changed before an event is read as it is after the change.
            {"ns.coll": WEBHOOKS},
            {"ns.coll": VERSIONS, "operationType": {"$in": ["insert", "update", "replace"]}},
            {"ns.coll": ALIAS_CHANGES, "operationType": "insert"},
            {
                "ns.coll": DOWNLOADS,
                "operationType": "update",
                "updateDescription.updatedFields.status": {"$in": DOWNLOAD_OUTCOMES},
            },
        ]
    }
}


@dataclass(frozen=True)
class RecordChange:
    """One write the webhooks may report: which collection, insert or update, the fields an update set
    (their top-level names), and the document as it is now (`updateLookup`: possibly further along)."""

    token: dict[str, Any]
    insert: bool
    updated: frozenset[str]
    document: ModelVersion | AliasChange | DownloadEvent


_DOCUMENTS: dict[str, type[ModelVersion] | type[AliasChange] | type[DownloadEvent]] = {
    VERSIONS: ModelVersion,
    ALIAS_CHANGES: AliasChange,
    DOWNLOADS: DownloadEvent,
}


class Changes:
    """The database's change stream of the writes webhooks report, from just after `start_after` (or from
    now); `position` is where a reader that has handled everything so far may resume."""

    def __init__(self, database: Any, start_after: dict[str, Any] | None, wait_ms: int = 500) -> None:
        self.database = database
        self.start_after = start_after
        self.wait_ms = wait_ms
        self.stream: Any = None
        # Set when a webhook changed since the reader last cleared it: its list must be read again.
        self.webhooks_changed = True

    async def __aenter__(self) -> Changes:
        self.stream = await self.database.watch(
            [_CHANGES], full_document="updateLookup", start_after=self.start_after,
            max_await_time_ms=self.wait_ms,
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.close()

    @property
    def position(self) -> dict[str, Any] | None:
        token = self.stream.resume_token
        return dict(token) if token is not None else None

    async def next(self) -> RecordChange | None:
        """The next change, or None when none arrived within the wait (or its document is gone)."""
        change = await self.stream.try_next()
        if change is None:
            return None
        collection = change.get("ns", {}).get("coll", "")
        if collection == WEBHOOKS:
            self.webhooks_changed = True
            return None
        doc = change.get("fullDocument")
        kind = _DOCUMENTS.get(collection)
        if doc is None or kind is None:  # deleted since, or not ours
            return None
        fields = change.get("updateDescription", {}).get("updatedFields", {})
        return RecordChange(
            token=dict(change["_id"]),
            insert=change.get("operationType") != "update",
            updated=frozenset(name.split(".", 1)[0] for name in fields),
            document=kind.model_validate(doc),
        )


def database() -> Any:
    return WebhookDelivery.get_pymongo_collection().database


async def cursor(name: str) -> StreamCursor:
    """The named cursor, created empty on first use."""
    await insert_once(StreamCursor(id=name))
    found = await find_one(StreamCursor, {"_id": name})
    assert found is not None
    return found


async def take_cursor(name: str, holder: str, now: datetime, until: datetime) -> StreamCursor | None:
    """The cursor with its lease for `holder` until `until`, when the lease is free, lapsed or already
    `holder`'s; None when another reader holds it."""
    current = await cursor(name)
    lease = current.lease_until.replace(tzinfo=UTC) if current.lease_until else None
    if current.holder not in (None, holder) and lease is not None and lease > now:
        return None
    taken = await StreamCursor.get_pymongo_collection().update_one(
        {"_id": name, "holder": current.holder, "lease_until": current.lease_until},
        {"$set": {"holder": holder, "lease_until": until}},
    )
    return await find_one(StreamCursor, {"_id": name}) if taken.modified_count else None


async def save_cursor(
    name: str, holder: str, token: dict[str, Any] | None, seq: int, until: datetime
) -> bool:
    """Stores where the reader stands and extends its lease; False when `holder` lost the lease."""
    result = await StreamCursor.get_pymongo_collection().update_one(
        {"_id": name, "holder": holder},
        {"$set": {"token": token, "seq": seq, "lease_until": until}},
    )
    return bool(result.matched_count)


async def release_cursor(name: str, holder: str) -> None:
    await StreamCursor.get_pymongo_collection().update_one(
        {"_id": name, "holder": holder}, {"$set": {"holder": None, "lease_until": None}}
    )


async def insert_deliveries(deliveries: list[WebhookDelivery]) -> None:
    """Inserts the deliveries; those already there (a replayed change) are left as they are."""
    if not deliveries:
        return
    docs = [d.model_dump(by_alias=True) for d in deliveries]
    try:
        await WebhookDelivery.get_pymongo_collection().insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
            raise


async def get(delivery_id: str) -> WebhookDelivery | None:
    return await find_one(WebhookDelivery, {"_id": delivery_id})


@dataclass
class Pending:
    """What the sender needs of a PENDING delivery to decide whether to lease it (kept between reads)."""

    id: str
    webhook_id: PydanticObjectId
    key: str
    next_attempt_at: datetime
    lease_until: datetime | None


async def any_pending() -> bool:
    found = await WebhookDelivery.get_pymongo_collection().find_one(
        {"status": DeliveryStatus.PENDING.value}, {"_id": 1}
    )
    return found is not None


async def pending(webhook_id: PydanticObjectId, limit: int) -> list[Pending]:
    """The `limit` oldest PENDING deliveries of one webhook, in `seq` order (one read of the
    `webhook_status_seq` index): read per webhook, so that one webhook's backlog never hides another's."""
    rows = (
        await WebhookDelivery.get_pymongo_collection()
        .find(
            {"webhook_id": webhook_id, "status": DeliveryStatus.PENDING.value},
            {"webhook_id": 1, "key": 1, "next_attempt_at": 1, "lease_until": 1},
        )
        .sort([("webhook_id", 1), ("status", 1), ("seq", 1)])
        .limit(limit)
        .to_list()
    )

    def utc(value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    return [
        Pending(r["_id"], r["webhook_id"], r["key"], utc(r["next_attempt_at"]) or datetime.now(UTC),
                utc(r.get("lease_until")))
        for r in rows
    ]  # fmt: skip


async def lease(delivery_id: str, seen: datetime | None, until: datetime) -> WebhookDelivery | None:
    """Takes one PENDING delivery by a compare-and-set on the lease value seen (equality on None also
    matches a missing field): the delivery, or None when another worker took it first."""
    taken = await WebhookDelivery.get_pymongo_collection().update_one(
        {"_id": delivery_id, "status": DeliveryStatus.PENDING.value, "lease_until": seen},
        {"$set": {"lease_until": until}},
    )
    return await get(delivery_id) if taken.modified_count else None


async def finish(delivery_id: str, until: datetime, fields: Condition) -> bool:
    """Records an attempt's outcome if the lease taken until `until` is still this worker's."""
    result = await WebhookDelivery.get_pymongo_collection().update_one(
        {"_id": delivery_id, "lease_until": until}, {"$set": {**fields, "lease_until": None}}
    )
    return bool(result.matched_count)


async def fail_pending(webhook_id: PydanticObjectId, reason: str, when: datetime) -> int:
    result = await WebhookDelivery.get_pymongo_collection().update_many(
        {"webhook_id": webhook_id, "status": DeliveryStatus.PENDING.value},
        {"$set": {"status": DeliveryStatus.FAILED.value, "last_error": reason, "finished_at": when}},
    )
    return int(result.modified_count)


async def requeue(delivery_id: str, webhook_id: PydanticObjectId, when: datetime) -> WebhookDelivery | None:
    """Puts a finished delivery of `webhook_id` back in the outbox, same id (receivers deduplicate)."""
    result = await WebhookDelivery.get_pymongo_collection().update_one(
        {"_id": delivery_id, "webhook_id": webhook_id},
        {
            "$set": {
                "status": DeliveryStatus.PENDING.value, "attempts": 0, "next_attempt_at": when,
                "lease_until": None, "finished_at": None, "created_at": when, "first_attempt_at": None,
            }
        },
    )  # fmt: skip
    return await get(delivery_id) if result.matched_count else None


async def drop_orphans(webhook_ids: list[PydanticObjectId]) -> int:
    """Deletes PENDING deliveries of webhooks not in `webhook_ids` (deleted while the dispatcher was writing
    deliveries for them): nobody would ever send them."""
    result = await WebhookDelivery.get_pymongo_collection().delete_many(
        {"status": DeliveryStatus.PENDING.value, "webhook_id": {"$nin": webhook_ids}}
    )
    return int(result.deleted_count)


async def delete_for(webhook_id: PydanticObjectId) -> None:
    await WebhookDelivery.get_pymongo_collection().delete_many({"webhook_id": webhook_id})


async def page(webhook_id: PydanticObjectId, request: PageRequest) -> Page[WebhookDelivery]:
    """A webhook's deliveries, newest event first."""
    sort = [("seq", SortDirection.DESCENDING)]
    return await keyset_page(WebhookDelivery, {"webhook_id": webhook_id}, sort, "DELIVERY_SEQ_DESC", request)


async def backlog() -> tuple[int, datetime | None]:
    """How many deliveries are PENDING, and when the oldest of them was created."""
    collection = WebhookDelivery.get_pymongo_collection()
    flt = {"status": DeliveryStatus.PENDING.value}
    depth = int(await collection.count_documents(flt))
    first = await collection.find(flt, {"created_at": 1}).sort([("status", 1), ("seq", 1)]).limit(1).to_list()
    oldest = first[0]["created_at"].replace(tzinfo=UTC) if first else None
    return depth, oldest
