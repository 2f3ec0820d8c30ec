"""Owner of `webhooks`: their records (with signing secrets), changes, enabling and failure bookkeeping."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from beanie import PydanticObjectId, SortDirection

from ..documents import Webhook
from .common import Condition, find_one, insert_once

# Every webhook is read on each pass of the dispatcher; a bound keeps one pass's work bounded too.
MAX_WEBHOOKS = 1000


async def insert(webhook: Webhook) -> None:
    await insert_once(webhook)


async def get(webhook_id: Any) -> Webhook | None:
    return await find_one(Webhook, {"_id": webhook_id})


async def count() -> int:
    return int(await Webhook.get_pymongo_collection().count_documents({}))


async def all_webhooks() -> list[Webhook]:
    order = [("created_at", SortDirection.ASCENDING), ("_id", SortDirection.ASCENDING)]
    return await Webhook.find_all().sort(order).limit(MAX_WEBHOOKS).to_list()


async def update(
    webhook_id: PydanticObjectId, fields: Condition, unset: list[str] | None = None
) -> Webhook | None:
    """Sets `fields` (and unsets `unset`); None when the webhook does not exist."""
    change: Condition = {"$set": fields}
    if unset:
        change["$unset"] = {name: "" for name in unset}
    result = await Webhook.get_pymongo_collection().update_one({"_id": webhook_id}, change)
    return await get(webhook_id) if result.matched_count else None


async def delete(webhook_id: PydanticObjectId) -> bool:
    result = await Webhook.get_pymongo_collection().delete_one({"_id": webhook_id})
    return bool(result.deleted_count)


async def record_failure(webhook_id: PydanticObjectId, when: datetime) -> Webhook | None:
    """Starts the webhook's run of failures at `when` unless one is already running; the webhook after."""
    await Webhook.get_pymongo_collection().update_one(
        {"_id": webhook_id, "failing_since": None}, {"$set": {"failing_since": when}}
    )
    return await get(webhook_id)


async def record_success(webhook_id: PydanticObjectId) -> None:
    await Webhook.get_pymongo_collection().update_one(
        {"_id": webhook_id, "failing_since": {"$ne": None}}, {"$set": {"failing_since": None}}
    )


async def disable(webhook_id: PydanticObjectId, reason: str, when: datetime) -> bool:
    """Disables an enabled webhook with its reason; False when it was already disabled (or is gone)."""
    result = await Webhook.get_pymongo_collection().update_one(
        {"_id": webhook_id, "enabled": True},
        {"$set": {"enabled": False, "disabled_reason": reason, "updated_at": when}},
    )
    return bool(result.modified_count)
