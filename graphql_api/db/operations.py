"""Owner of `persisted_operations`: GraphQL documents by the SHA-256 of their text."""

from __future__ import annotations

from pymongo.errors import DuplicateKeyError

from ..documents import PersistedOperation
from .common import find_one


async def by_hash(sha256: str) -> PersistedOperation | None:
    return await find_one(PersistedOperation, {"_id": sha256})


async def insert(op: PersistedOperation) -> bool:
    """True when stored now, False when that hash was already registered (the same text, so nothing to do)."""
    try:
        await op.insert()
    except DuplicateKeyError:
        return False
    return True


async def all_hashes() -> dict[str, str]:
    """Every registered hash with its text (loaded once at start-up; operations are few and small)."""
    collection = PersistedOperation.get_pymongo_collection()
    return {doc["_id"]: doc["body"] async for doc in collection.find({}, {"body": 1})}
