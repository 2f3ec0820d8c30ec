"""Owner of `models`: every query and update of registered model versions, and their filter translation."""

from __future__ import annotations

import re
from typing import Any, cast

from beanie import PydanticObjectId, SortDirection
from beanie.odm.queries.update import UpdateResponse
from pymongo.errors import DuplicateKeyError

from ..documents import Model
from ..pagination import Page
from ..queries import ModelOrder, ModelQuery
from .common import Condition, time_window
from .paging import Sort, keyset_page

ASC, DESC = SortDirection.ASCENDING, SortDirection.DESCENDING
SORTS: dict[ModelOrder, Sort] = {
    ModelOrder.CREATED_AT_DESC: [("created_at", DESC), ("_id", DESC)],
    ModelOrder.CREATED_AT_ASC: [("created_at", ASC), ("_id", ASC)],
    ModelOrder.NAME_ASC: [("name", ASC), ("version", ASC)],
    ModelOrder.NAME_DESC: [("name", DESC), ("version", DESC)],
}


def model_filter(q: ModelQuery) -> Condition:
    q.validate()
    flt: Condition = {}
    if q.name is not None:
        matches = not q.name_prefix or q.name.startswith(q.name_prefix)
        flt["name"] = q.name if matches else {"$in": []}
    elif q.name_prefix:
        flt["name"] = {"$regex": "^" + re.escape(q.name_prefix)}
    if q.project_name is not None:
        flt["project_name"] = q.project_name
    if q.owner is not None:
        flt["owner"] = q.owner
    if q.tags:
        flt["tags"] = {"$all": q.tags}
    flt.update(time_window("created_at", q.created_after, q.created_before))
    if not q.include_archived:
        flt["archived"] = False
    return flt


async def insert(model: Model) -> bool:
    """Inserts a new version; False when (name, version) is taken (the unique index decides every race)."""
    try:
        await model.insert()
    except DuplicateKeyError:
        return False
    return True


async def find_version(name: str, version: int) -> Model | None:
    return await Model.find_one(Model.name == name, Model.version == version)


async def find_latest(name: str) -> Model | None:
    """The newest unarchived version of `name`."""
    return (
        await Model.find(Model.name == name, Model.archived == False)  # noqa: E712 - a query, not a test
        .sort([("version", DESC)])
        .first_or_none()
    )


async def get(model_id: PydanticObjectId) -> Model | None:
    return await Model.get(model_id)


async def get_many(ids: list[Any]) -> dict[Any, Model]:
    return {d.id: d for d in await Model.find({"_id": {"$in": ids}}).to_list()}


async def set_archived(name: str, version: int, archived: bool) -> Model | None:
    found = await Model.find_one(Model.name == name, Model.version == version).update(
        {"$set": {"archived": archived}}, response_type=UpdateResponse.NEW_DOCUMENT
    )
    return cast(Model | None, found)


async def page(query: ModelQuery, order: ModelOrder, first: int | None, after: str | None) -> Page[Model]:
    return await keyset_page(Model, model_filter(query), SORTS[order], order.value, first, after)


async def name_versions(query: ModelQuery) -> list[tuple[Any, str, int]]:
    """(id, name, version) of every matching model: the keys a downloads-ordered listing sorts."""
    cursor = Model.get_pymongo_collection().find(model_filter(query), {"name": 1, "version": 1})
    return [(d["_id"], d["name"], d["version"]) async for d in cursor]


async def insert_many(models: list[Model]) -> None:
    await Model.insert_many(models)


async def existing_keys() -> set[tuple[str, int]]:
    """(name, version) of every registered model."""
    cursor = Model.get_pymongo_collection().find({}, {"name": 1, "version": 1})
    return {(d["name"], d["version"]) async for d in cursor}


async def in_bucket(bucket: str) -> list[Model]:
    return await Model.find(Model.bucket == bucket).to_list()
