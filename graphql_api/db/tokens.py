"""Owner of `api_tokens`: bearer tokens by hash, their creation, listing, revocation and last use."""

from __future__ import annotations

from datetime import datetime

import pymongo
from beanie import SortDirection
from beanie.odm.queries.update import UpdateResponse
from bson import ObjectId

from ..documents import ApiToken
from .common import find_one, insert_once


async def insert(token: ApiToken) -> bool:
    """False when the name (or, astronomically unlikely, the hash) is taken."""
    return await insert_once(token)


async def by_hash(token_hash: str) -> ApiToken | None:
    return await find_one(ApiToken, {"token_hash": token_hash})


async def by_id(token_id: str) -> ApiToken | None:
    """None for an id that is not a token's (or not an ObjectId at all)."""
    if not ObjectId.is_valid(token_id):
        return None
    return await find_one(ApiToken, {"_id": ObjectId(token_id)})


async def all_tokens() -> list[ApiToken]:
    return await ApiToken.find_all().sort([("created_at", SortDirection.ASCENDING)]).to_list()


async def any_token() -> bool:
    return await ApiToken.find_one({}) is not None


async def revoke(name: str, when: datetime) -> ApiToken | None:
    found = await ApiToken.find_one(ApiToken.name == name, ApiToken.revoked_at == None).update(  # noqa: E711
        {"$set": {"revoked_at": when}}, response_type=UpdateResponse.NEW_DOCUMENT
    )
    return found if isinstance(found, ApiToken) else None


async def touch(token_hash: str, when: datetime, within: float = 5.0) -> None:
    """Moves the token's `last_used_at` on to `when`, giving up after `within` seconds."""
    with pymongo.timeout(within):
        await ApiToken.find_one(ApiToken.token_hash == token_hash).update({"$max": {"last_used_at": when}})
