"""Schema migrations of the stored data, run by `connect` before Beanie creates its indexes.

1. One document per version in `models` (before models and versions were split) → the versions move to
   `model_versions` with their ids (download events keep pointing at them) and `models` gets one document
   per name, taking version 1's (or the lowest version's) project and owner.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

log = logging.getLogger("modelhub.migrations")
DUPLICATE_KEY = 11000


async def split_models_and_versions(db: AsyncDatabase[Any]) -> int:
    """Moves old per-version documents out of `models`; returns how many moved (0 once done)."""
    old = db["models"]
    if await old.find_one({"version": {"$exists": True}}) is None:
        return 0
    versions = [doc async for doc in old.find({"version": {"$exists": True}})]
    try:
        await db["model_versions"].insert_many(versions, ordered=False)
    except BulkWriteError as exc:  # an interrupted earlier run already moved some
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
    first: dict[str, dict[str, Any]] = {}
    latest: dict[str, Any] = {}
    for doc in sorted(versions, key=lambda d: d["version"]):
        first.setdefault(doc["name"], doc)
        latest[doc["name"]] = max(latest.get(doc["name"], doc["created_at"]), doc["created_at"])
    await old.delete_many({"version": {"$exists": True}})
    for info in await (await old.list_indexes()).to_list():
        if info["name"] != "_id_":
            await old.drop_index(info["name"])  # per-version indexes; Beanie creates the new ones
    have = {d["name"] async for d in old.find({}, {"name": 1})}
    models = [
        {
            "name": name,
            "project_name": doc["project_name"],
            "owner": doc["owner"],
            "description": doc.get("description"),
            "tags": doc.get("tags", []),
            "aliases": {},
            "created_at": doc["created_at"],
            "updated_at": latest[name],
        }
        for name, doc in first.items()
        if name not in have
    ]
    if models:
        await old.insert_many(models)
    log.warning(
        "migrated %d model versions of %d models to models + model_versions", len(versions), len(first)
    )
    return len(versions)


async def run(db: AsyncDatabase[Any]) -> None:
    await split_models_and_versions(db)
