"""Owner of `uploads`: open uploads, their completion, and the expired ones to clean up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from ..documents import Upload, UploadStatus
from .common import Condition, find_one, insert_once


async def insert(upload: Upload) -> None:
    await insert_once(upload)


async def get(upload_id: Any) -> Upload | None:
    return await find_one(Upload, {"_id": upload_id})


async def update(upload_id: Any, when: Condition, fields: Condition) -> bool:
    """Sets `fields` if the upload still matches `when`; False when it no longer does."""
    flt = {"_id": upload_id, **when}
    result = await Upload.get_pymongo_collection().update_one(flt, {"$set": fields})
    return bool(result.modified_count)


def expired(now: datetime) -> AsyncIterator[Upload]:
    flt = {"status": UploadStatus.PENDING.value, "expires_at": {"$lt": now}}
    return aiter(Upload.find(flt))
