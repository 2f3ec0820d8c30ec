"""Aliases of model versions (`prod`, `staging`): setting, moving and removing them, and their history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .auth import Principal
from .db import models as models_db
from .documents import AliasChange, RegisteredModel, utcnow
from .errors import AliasNotFound, InvalidInput, ModelVersionArchived, ModelVersionNotFound
from .pagination import Page, PageRequest
from .registry import get_model, require_model, require_owner
from .roles import ProjectRole
from .scope import Scope, has_role
from .validation import validate_alias, validate_version

MAX_ALIASES = 100
_ATTEMPTS = 20  # compare-and-set retries when another move of the same alias lands in between


async def set_alias(scope: Scope, name: str, alias: str, version: int, who: Principal) -> RegisteredModel:
    """Points `alias` at `version` (an unarchived version of the model) and records the move."""
    validate_alias(alias)
    validate_version(version)
    target = await models_db.find_version(name, version)
    if target is None or not scope.can_read(target.project_name):
        await require_model(scope, name)  # ModelNotFound before ModelVersionNotFound
        raise ModelVersionNotFound(name, version)
    if target.archived:
        raise ModelVersionArchived(name, version)

    def to(model: RegisteredModel, current: int | None) -> int | None:
        if current is None and len(model.aliases) >= MAX_ALIASES:
            raise InvalidInput("alias", f"a model has at most {MAX_ALIASES} aliases")
        return version

    return await _move(scope, name, alias, who, to)


async def remove_alias(scope: Scope, name: str, alias: str, who: Principal) -> RegisteredModel:
    """Removes `alias` and records the removal; AliasNotFound when the model has no such alias."""
    validate_alias(alias)

    def to(model: RegisteredModel, current: int | None) -> int | None:
        if current is None:
            raise AliasNotFound(name, alias)
        return None

    return await _move(scope, name, alias, who, to)


def require_alias_mover(model: RegisteredModel, who: Principal) -> None:
    """An alias is moved by the model's owner (an ENGINEER of its project) or a MAINTAINER of the project."""
    if has_role(who, model.project_name, ProjectRole.MAINTAINER):
        return
    require_owner(model, who)


async def _move(
    scope: Scope,
    name: str,
    alias: str,
    who: Principal,
    to: Callable[[RegisteredModel, int | None], int | None],
) -> RegisteredModel:
    """Moves `alias` to `to(model, current)` (None removes it) by compare-and-set, retried while other
    moves land in between, and records the move; a move to where it already points records nothing."""
    model = await require_model(scope, name)
    require_alias_mover(model, who)
    for _ in range(_ATTEMPTS):
        current = model.aliases.get(alias)
        target = to(model, current)
        if target == current:
            return model
        if await models_db.move_alias(name, alias, target, model.alias_moves):
            await _record(name, alias, current, target, who, model.alias_moves + 1)
            return await require_model(scope, name)
        model = await require_model(scope, name)
    raise InvalidInput("alias", "the alias is being moved concurrently; try again")


async def _record(
    name: str, alias: str, before: int | None, after: int | None, who: Principal, sequence: int
) -> None:
    change = AliasChange(
        model_name=name,
        alias=alias,
        from_version=before,
        to_version=after,
        changed_by=who.engineer,
        sequence=sequence,
    )
    await models_db.record_alias_change(change)
    await models_db.touch(name, utcnow())


async def history(scope: Scope, name: str, request: PageRequest) -> Page[AliasChange]:
    """Every move of the model's aliases, newest first (ModelNotFound for a model `scope` cannot read)."""
    await require_model(scope, name)
    return await models_db.alias_changes(name, request)


async def change_by_id(scope: Scope, change_id: Any) -> AliasChange | None:
    """An alias move, if `scope` may read its model."""
    change = await models_db.get_alias_change(change_id)
    if change is None or await get_model(scope, change.model_name) is None:
        return None
    return change
