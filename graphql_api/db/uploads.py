"""Owner of `uploads`: open uploads, their completion, the expired ones to clean up, and which project an
upload location is for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

from ..documents import Upload, UploadStatus
from .common import Condition, find_one, insert_once, used_outside


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


async def object_used_outside(bucket: str, key: str, writable: Collection[str]) -> bool:
    """Whether an upload of a project not among `writable` goes (or went) to this object: any status, an
    upload's location is its project's whether it is open, completed or expired."""
    return await used_outside(Upload, bucket, key, writable)
