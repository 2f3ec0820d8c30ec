"""Aliases of model versions (`prod`, `staging`): setting, moving and removing them, and their history."""

from __future__ import annotations

from typing import Any

from .auth import Principal
from .db import models as models_db
from .documents import AliasChange, RegisteredModel, utcnow
from .errors import AliasNotFound, InvalidInput, ModelNotFound, ModelVersionArchived, ModelVersionNotFound
from .pagination import Page, PageRequest
from .registry import require_model, require_owner
from .validation import validate_alias, validate_version

MAX_ALIASES = 100
_ATTEMPTS = 5  # compare-and-set retries when another move of the same alias lands in between


async def set_alias(name: str, alias: str, version: int, who: Principal) -> RegisteredModel:
    """Points `alias` at `version` (an unarchived version of the model) and records the move."""
    validate_alias(alias)
    validate_version(version)
    model = await require_model(name)
    require_owner(model, who)
    target = await models_db.find_version(name, version)
    if target is None:
        raise ModelVersionNotFound(name, version)
    if target.archived:
        raise ModelVersionArchived(name, version)
    for _ in range(_ATTEMPTS):
        current = model.aliases.get(alias)
        if current == version:
            return model
        if current is None and len(model.aliases) >= MAX_ALIASES:
            raise InvalidInput("alias", f"a model has at most {MAX_ALIASES} aliases")
        moved = await models_db.move_alias(name, alias, version, current)
        if moved is not None:
            await _record(name, alias, current, version, who)
            return moved
        model = await require_model(name)
    raise InvalidInput("alias", "the alias is being moved concurrently; try again")


async def remove_alias(name: str, alias: str, who: Principal) -> RegisteredModel:
    """Removes `alias` and records the removal; AliasNotFound when the model has no such alias."""
    validate_alias(alias)
    model = await require_model(name)
    require_owner(model, who)
    for _ in range(_ATTEMPTS):
        current = model.aliases.get(alias)
        if current is None:
            raise AliasNotFound(name, alias)
        moved = await models_db.move_alias(name, alias, None, current)
        if moved is not None:
            await _record(name, alias, current, None, who)
            return moved
        model = await require_model(name)
    raise InvalidInput("alias", "the alias is being moved concurrently; try again")


async def _record(name: str, alias: str, before: int | None, after: int | None, who: Principal) -> None:
    change = AliasChange(
        model_name=name, alias=alias, from_version=before, to_version=after, changed_by=who.engineer
    )
    await models_db.record_alias_change(change)
    await models_db.touch(name, utcnow())


async def history(name: str, request: PageRequest) -> Page[AliasChange]:
    """Every move of the model's aliases, newest first."""
    if await models_db.find_model(name) is None:
        raise ModelNotFound(name)
    return await models_db.alias_changes(name, request)


async def change_by_id(change_id: Any) -> AliasChange | None:
    return await models_db.get_alias_change(change_id)
