"""Owner of `model_version_counters`: the last auto-numbered version handed out per model name."""

from __future__ import annotations

import contextlib

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..documents import VersionCounter


async def _ensure(name: str) -> None:
    # Created with a plain insert rather than an upsert: concurrent upserting findAndModify calls lost
    # increments on SecantusDB 0.7, while an insert that loses a race simply raises DuplicateKeyError.
    with contextlib.suppress(DuplicateKeyError):
        await VersionCounter.get_pymongo_collection().insert_one({"_id": name, "seq": 0})


async def next_version(name: str) -> int:
    """The next number for `name`, atomically: concurrent callers never get the same one."""
    collection = VersionCounter.get_pymongo_collection()
    for _ in range(2):  # the name's first registration creates its counter, then increments it
        doc = await collection.find_one_and_update(
            {"_id": name}, {"$inc": {"seq": 1}}, return_document=ReturnDocument.AFTER
        )
        if doc is not None:
            return int(doc["seq"])
        await _ensure(name)
    raise RuntimeError(f"version counter for {name!r} could not be created")  # pragma: no cover


async def raise_to(name: str, version: int) -> None:
    """Later auto-numbered versions of `name` continue above an explicitly chosen `version`."""
    await _ensure(name)
    await VersionCounter.get_pymongo_collection().update_one({"_id": name}, {"$max": {"seq": version}})
