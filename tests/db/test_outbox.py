"""The outbox collection owner: change-stream replay from a stored position, idempotent delivery inserts,
delivery and dispatcher leases as compare-and-sets."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from beanie import PydanticObjectId

from graphql_api import webhooks
from graphql_api.config import Settings
from graphql_api.db import connect
from graphql_api.db import models as models_db
from graphql_api.db import outbox as outbox_db
from graphql_api.documents import (
    ChecksumStatus,
    DownloadEvent,
    DownloadMode,
    DownloadStatus,
    ModelVersion,
    Webhook,
    WebhookDelivery,
    utcnow,
)


def version(n: int) -> ModelVersion:
    return ModelVersion(
        name="m", version=n, bucket="b", key="k", size_bytes=1, etag="e", content_type="x",
        project_name="p", owner="o",
    )  # fmt: skip


def hook() -> Webhook:
    return Webhook(
        id=PydanticObjectId(), url="http://127.0.0.1/", events=["VERSION_REGISTERED"], secret="whsec_AAAA",
        created_by="a", creator_role="ADMIN",
    )  # fmt: skip


async def read(changes: outbox_db.Changes, count: int) -> list[outbox_db.RecordChange]:
    found: list[outbox_db.RecordChange] = []
    for _ in range(40):
        change = await changes.next()
        if change is not None:
            found.append(change)
        if len(found) == count:
            break
    return found


@pytest.mark.parametrize("store_kind", ["local"])
async def test_replaying_from_a_stored_position_makes_the_same_deliveries(
    settings: Settings, db: Any
) -> None:
    """Changes read again from an earlier position yield the same delivery ids: inserting them again adds
    nothing, so a dispatcher that crashed before storing its position loses and duplicates nothing."""
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        target = hook()
        async with outbox_db.Changes(outbox_db.database(), None, wait_ms=100) as changes:
            start = changes.position
            for n in (1, 2, 3):
                await models_db.insert_version(version(n))
            first = await read(changes, 3)
        rows = [d for i, c in enumerate(first) for d in webhooks.deliveries_for(c, i + 1, [target], "p")]
        await outbox_db.insert_deliveries(rows)
        async with outbox_db.Changes(outbox_db.database(), start, wait_ms=100) as replay:
            again = await read(replay, 3)
        assert [c.token for c in again] == [c.token for c in first]
        rows_again = [
            d for i, c in enumerate(again) for d in webhooks.deliveries_for(c, i + 1, [target], "p")
        ]
        assert [d.id for d in rows_again] == [d.id for d in rows]
        await outbox_db.insert_deliveries(rows_again)
        assert db.webhook_deliveries.count_documents({}) == 3
        assert [c.document.version for c in again if isinstance(c.document, ModelVersion)] == [1, 2, 3]


@pytest.mark.parametrize("store_kind", ["local"])
async def test_a_delivery_lease_is_taken_once(settings: Settings, db: Any) -> None:
    """Of two workers leasing the same delivery with the lease value they saw, one wins; a lapsed lease
    can be retaken; an outcome is recorded only by the lease holder."""
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        target = hook()
        delivery = WebhookDelivery(
            id="msg_1", webhook_id=webhooks.ident(target), event_type="TEST", key="", seq=1, body="{}"
        )
        await outbox_db.insert_deliveries([delivery])
        [row] = await outbox_db.pending(webhooks.ident(target), 10)
        until = utcnow() + timedelta(seconds=30)
        won = await asyncio.gather(*(outbox_db.lease(row.id, row.lease_until, until) for _ in range(2)))
        assert sum(w is not None for w in won) == 1
        later = until + timedelta(seconds=1)
        assert not await outbox_db.finish(row.id, later, {"attempts": 1})  # not the holder's lease
        [held] = await outbox_db.pending(webhooks.ident(target), 10)
        assert held.lease_until == until
        assert await outbox_db.lease(row.id, held.lease_until, later) is not None  # a lapsed one, retaken
        assert await outbox_db.finish(row.id, later, {"attempts": 1, "status": "DELIVERED"})
        assert await outbox_db.pending(webhooks.ident(target), 10) == []


@pytest.mark.parametrize("store_kind", ["local"])
async def test_one_dispatcher_holds_the_stream(settings: Settings) -> None:
    """The cursor's lease goes to one holder until it lapses or is released; a holder that lost it cannot
    store a position."""
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        now = utcnow()
        until = now + timedelta(seconds=10)
        assert await outbox_db.take_cursor("c", "a", now, until) is not None
        assert await outbox_db.take_cursor("c", "b", now, until) is None
        assert await outbox_db.save_cursor("c", "a", {"_data": "x"}, 5, until)
        taken = await outbox_db.take_cursor(
            "c", "b", until + timedelta(seconds=1), until + timedelta(seconds=11)
        )
        assert taken is not None and taken.token == {"_data": "x"} and taken.seq == 5
        assert not await outbox_db.save_cursor("c", "a", {"_data": "y"}, 6, until)
        await outbox_db.release_cursor("c", "b")
        assert await outbox_db.take_cursor("c", "a", now, until) is not None


def _version(**fields: object) -> ModelVersion:
    values: dict[str, object] = dict(
        name="m", version=1, bucket="b", key="k", size_bytes=1, etag="e", content_type="x", project_name="p",
        owner="o",
    )  # fmt: skip
    return ModelVersion(**{**values, **fields})  # type: ignore[arg-type]


def _change(doc: object, insert: bool = False, updated: tuple[str, ...] = ()) -> outbox_db.RecordChange:
    return outbox_db.RecordChange({"_data": "t"}, insert, frozenset(updated), doc)  # type: ignore[arg-type]


@pytest.mark.parametrize("store_kind", ["local"])
async def test_events_of_recorded_writes(settings: Settings) -> None:
    """Inserts, archive flags, note changes and checksum results map to their events; leases map to none."""
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        E = webhooks.WebhookEvent
        verified = _version(checksum_status=ChecksumStatus.VERIFIED)
        assert webhooks.events_of(_change(_version(), insert=True)) == [E.VERSION_REGISTERED]
        assert webhooks.events_of(_change(verified, insert=True)) == [
            E.VERSION_REGISTERED,
            E.CHECKSUM_VERIFIED,
        ]
        assert webhooks.events_of(_change(_version(archived=True), updated=("archived",))) == [
            E.VERSION_ARCHIVED
        ]
        assert webhooks.events_of(_change(_version(), updated=("archived",))) == [E.VERSION_UPDATED]
        assert webhooks.events_of(_change(_version(), updated=("tags",))) == [E.VERSION_UPDATED]
        mismatch = _version(checksum_status=ChecksumStatus.MISMATCH)
        assert webhooks.events_of(_change(mismatch, updated=("checksum_status",))) == [E.CHECKSUM_MISMATCH]
        assert webhooks.events_of(_change(_version(), updated=("checksum_lease_until",))) == []
        failed = DownloadEvent(
            model_id=PydanticObjectId(), model_name="m", model_version=1, project_name="p", size_bytes=1,
            engineer="e", mode=DownloadMode.STREAM, status=DownloadStatus.FAILED,
        )  # fmt: skip
        assert webhooks.events_of(_change(failed, updated=("status",))) == [E.DOWNLOAD_FAILED]
