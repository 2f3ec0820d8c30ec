"""Owner of `projects`: each project's visibility and its project-side grants (principal name -> role).

A project document is created by the first registration in the project, or by a visibility or grant change
naming it; the migration creates one (INTERNAL) per project that models already use. A grant change is a
`$pull` then a `$push` of the principal's entry (SecantusDB has no pipeline updates to do both at once); two
racing changes of the same principal's grant may leave both entries, and readers take the highest role.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..documents import Project, ProjectGrant, ProjectVisibility, utcnow
from ..roles import ProjectRole


def _collection() -> Any:
    return Project.get_pymongo_collection()


def _new(name: str, now: datetime) -> dict[str, Any]:
    return {"name": name, "grants": [], "created_at": now}


async def ensure(name: str) -> bool:
    """Creates project `name` (INTERNAL, no grants) unless it exists; True when this call created it."""
    now = utcnow()
    try:
        result = await _collection().update_one(
            {"name": name},
            {
                "$setOnInsert": {
                    **_new(name, now),
                    "visibility": ProjectVisibility.INTERNAL.value,
                    "updated_at": now,
                }
            },
            upsert=True,
        )
    except DuplicateKeyError:  # a concurrent upsert of the same name won
        return False
    return result.upserted_id is not None


async def ensure_many(names: list[str]) -> int:
    """`ensure` for each name; how many were created."""
    created = 0
    for name in names:
        created += int(await ensure(name))
    return created


async def get(name: str) -> Project | None:
    doc = await _collection().find_one({"name": name})
    return None if doc is None else Project.model_validate(doc)


async def all_projects() -> list[Project]:
    """Every project (there is one per team or product, not per model: few enough to hold in memory)."""
    return [Project.model_validate(doc) async for doc in _collection().find({}).sort("name", 1)]


async def set_visibility(name: str, visibility: ProjectVisibility) -> Project:
    now = utcnow()
    doc = await _collection().find_one_and_update(
        {"name": name},
        {"$set": {"visibility": visibility.value, "updated_at": now}, "$setOnInsert": _new(name, now)},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    project: Project = Project.model_validate(doc)
    return project


async def grant(name: str, principal: str, role: ProjectRole, granted_by: str) -> Project:
    """Gives `principal` `role` in project `name` (replacing any role it had there)."""
    await ensure(name)
    entry = ProjectGrant(principal=principal, role=role, granted_by=granted_by).model_dump(mode="python")
    await _collection().update_one({"name": name}, {"$pull": {"grants": {"principal": principal}}})
    doc = await _collection().find_one_and_update(
        {"name": name},
        {"$push": {"grants": entry}, "$set": {"updated_at": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    project: Project = Project.model_validate(doc)
    return project


async def revoke(name: str, principal: str) -> Project | None:
    """Takes `principal`'s role in project `name` away; None when it had none there."""
    doc = await _collection().find_one_and_update(
        {"name": name, "grants.principal": principal},
        {"$pull": {"grants": {"principal": principal}}, "$set": {"updated_at": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    return None if doc is None else Project.model_validate(doc)
