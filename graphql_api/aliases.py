"""Aliases of model versions (`prod`, `staging`): setting, moving and removing them, and their history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .auth import Principal
from .db import models as models_db
from .documents import AliasChange, ModelVersion, RegisteredModel, utcnow
from .errors import AliasNotFound, InvalidInput, ModelVersionArchived, ModelVersionNotFound
from .pagination import Page, PageRequest
from .registry import get_model, require_model, require_owner
from .roles import ProjectRole
from .scope import Scope, has_role
from .validation import validate_alias, validate_name, validate_version

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
        # Never earlier than the move before (read with the model this compare-and-set is conditional on):
        # the history's times follow its sequence even across instances whose clocks differ a little.
        moved_at = utcnow()
        if model.alias_moved_at is not None:
            moved_at = max(moved_at, model.alias_moved_at.replace(tzinfo=UTC))
        if await models_db.move_alias(name, alias, target, model.alias_moves, moved_at):
            await _record(name, alias, current, target, who, model.alias_moves + 1, moved_at)
            return await require_model(scope, name)
        model = await require_model(scope, name)
    raise InvalidInput("alias", "the alias is being moved concurrently; try again")


async def _record(
    name: str,
    alias: str,
    before: int | None,
    after: int | None,
    who: Principal,
    sequence: int,
    moved_at: datetime,
) -> None:
    change = AliasChange(
        model_name=name,
        alias=alias,
        from_version=before,
        to_version=after,
        changed_by=who.engineer,
        sequence=sequence,
        changed_at=moved_at,
    )
    await models_db.record_alias_change(change)
    await models_db.touch(name, moved_at)


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


def _as_of(at: datetime) -> datetime:
    # Stored times are UTC milliseconds; a naive `at` is taken as UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def version_at(scope: Scope, name: str, alias: str, at: datetime) -> int | None:
    """The version `alias` pointed at at time `at` (the last move that had taken effect by then, moves at
    the same millisecond in their sequence order); None before it was set or while it was removed, and
    for a model `scope` may not read."""
    validate_name(name)
    validate_alias(alias)
    if await get_model(scope, name) is None:
        return None
    return await models_db.alias_version_at(name, alias, _as_of(at))


async def find_version_at(
    scope: Scope, name: str, version: int | None, alias: str | None, at: datetime
) -> ModelVersion | None:
    """`modelVersion(name, alias, at)`: the version the alias pointed at at time `at`, if it still exists."""
    if alias is None or version is not None:
        raise InvalidInput("at", "resolves an alias: give `alias` (and no `version`) with it")
    number = await version_at(scope, name, alias, at)
    return None if number is None else await models_db.find_version(name, number)


async def aliases_at(name: str, at: datetime) -> dict[str, int]:
    """Every alias of the model as they stood at time `at`: alias -> version (the caller has read the
    model)."""
    return await models_db.aliases_at(name, _as_of(at))
