"""Finding, updating, listing and archiving models and their versions (registering them is registration.py's,
its names re-exported here)."""

from __future__ import annotations

from typing import Any, TypeVar

from .analytics import events
from .auth import Principal
from .db import models as models_db
from .documents import ModelVersion, RegisteredModel, utcnow
from .errors import InvalidInput, ModelNotFound, ModelVersionNotFound, ObjectDeleted
from .model_cache import ModelCache
from .pagination import Page, PageRequest, empty_page, offset_page
from .queries import DownloadWindow, ModelOrder, ModelOrderField, ModelQuery, VersionOrder, VersionQuery

# Re-exported: registering's names, where the schema, uploads and aliases have always found them.
from .registration import RegisterRequest as RegisterRequest
from .registration import VersionRequest as VersionRequest
from .registration import check_joins as check_joins
from .registration import register as register
from .registration import require_owner as require_owner
from .registration import require_project_role as require_project_role
from .registration import used_elsewhere as used_elsewhere
from .scope import Scope
from .validation import (
    validate_alias,
    validate_description,
    validate_metadata,
    validate_name,
    validate_tags,
    validate_version,
)

Scoped = TypeVar("Scoped", RegisteredModel, ModelVersion)


def visible(scope: Scope, doc: Scoped | None) -> Scoped | None:
    """`doc` when `scope` may read its project, else None: an invisible object is an absent one."""
    return doc if doc is not None and scope.can_read(doc.project_name) else None


async def get_model(scope: Scope, name: str, cache: ModelCache | None = None) -> RegisteredModel | None:
    """The model `name` if `scope` may read it, or None; through `cache` when given (queries only: see
    model_cache.py)."""
    validate_name(name)
    if cache is not None:
        return visible(scope, await cache.get(name))
    return visible(scope, await models_db.find_model(name))


async def require_model(scope: Scope, name: str) -> RegisteredModel:
    """The model, or ModelNotFound (the same for an invisible one)."""
    model = await get_model(scope, name)
    if model is None:
        raise ModelNotFound(name)
    return model


async def find_version(
    scope: Scope, name: str, version: int | None = None, alias: str | None = None
) -> ModelVersion | None:
    """A version by number or alias (exactly one may be given), or the newest unarchived one; None when
    there is none or `scope` may not read its project."""
    validate_name(name)
    validate_version(version)
    if version is not None and alias is not None:
        raise InvalidInput("alias", "give a version or an alias, not both")
    if alias is not None:
        validate_alias(alias)
        model = visible(scope, await models_db.find_model(name))
        if model is None or alias not in model.aliases:
            return None
        version = model.aliases[alias]
    if version is not None:
        return visible(scope, await models_db.find_version(name, version))
    return visible(scope, await models_db.find_latest(name))


async def require_version(
    scope: Scope, name: str, version: int | None = None, alias: str | None = None
) -> ModelVersion:
    found = await find_version(scope, name, version, alias)
    if found is not None:
        return found
    await require_model(scope, name)
    raise ModelVersionNotFound(name, version, alias)


async def update_model(
    scope: Scope, name: str, who: Principal, description: str | None, tags: list[str] | None
) -> RegisteredModel:
    """Changes a model's description and tags (only those: nothing that locates an artifact)."""
    fields: dict[str, Any] = {"updated_at": utcnow()}  # checked before anything is looked up
    if description is not None:
        validate_description(description)
        fields["description"] = description
    if tags is not None:
        fields["tags"] = validate_tags(tags)
    require_owner(await require_model(scope, name), who)
    updated = await models_db.update_model(name, fields)
    if updated is None:
        raise ModelNotFound(name)
    return updated


async def update_version(
    scope: Scope,
    name: str,
    version: int,
    who: Principal,
    description: str | None,
    tags: list[str] | None,
    metadata: Any,
) -> ModelVersion:
    """Changes a version's description, tags and metadata; its artifact, checksum and number are immutable."""
    validate_version(version)
    fields: dict[str, Any] = {}  # checked before anything is looked up: a bad input is named first
    if description is not None:
        validate_description(description)
        fields["description"] = description
    if tags is not None:
        fields["tags"] = validate_tags(tags)
    if metadata is not None:
        fields["metadata"] = validate_metadata(metadata)
    if not fields:
        raise InvalidInput("input", "give at least one of description, tags or metadata")
    require_owner(await require_model(scope, name), who)
    updated = await models_db.update_version(name, version, fields)
    if updated is None:
        raise ModelVersionNotFound(name, version)
    await models_db.touch(name, utcnow())
    return updated


async def set_archived(scope: Scope, name: str, version: int, who: Principal, archived: bool) -> ModelVersion:
    """Archives (or restores) a version: hidden by default, no downloads, history and stats kept. Either way
    a pending prune of it is cancelled (its mark cleared): the owner has decided its state."""
    validate_version(version)
    require_owner(await require_model(scope, name), who)
    if not archived:
        found = await models_db.find_version(name, version)
        if found is not None and found.object_deleted:
            raise ObjectDeleted(name, version)  # a tombstone stays archived: it has nothing to serve
    updated = await models_db.update_version(name, version, {"archived": archived, "prune_marked_at": None})
    if updated is None:
        raise ModelVersionNotFound(name, version)
    return updated


async def list_models(
    scope: Scope,
    query: ModelQuery,
    order: ModelOrder,
    request: PageRequest,
    window: DownloadWindow | None = None,
    cache: ModelCache | None = None,
) -> Page[RegisteredModel]:
    """A page of models: from the in-memory catalogue through `cache` when given and its change stream
    is open (queries only: see catalogue.py), else from the database; the same rows and cursors. Both
    read `query` narrowed to the projects `scope` may read (their cursors are positions or keys of visible
    rows only, so a cursor made by hand reaches no row outside the scope)."""
    narrowed = scope.models(query)
    if narrowed is None:
        return empty_page()
    query = narrowed
    if order.field is ModelOrderField.DOWNLOADS:
        return await _list_by_downloads(query, order, window or DownloadWindow(), request)
    if cache is not None and await cache.catalogue.ready():
        found = cache.catalogue.page(query, order, request)
        by_name = await cache.get_many(n for n, _ in found.names)

        async def count() -> int:
            return found.count()

        return Page(
            items=[(by_name[n], c) for n, c in found.names if n in by_name],
            has_next=found.has_next,
            has_previous=found.has_previous,
            count=count,
        )
    return await models_db.page_models(query, order, request)


async def _list_by_downloads(
    query: ModelQuery, order: ModelOrder, window: DownloadWindow, request: PageRequest
) -> Page[RegisteredModel]:
    """Most (or least) completed downloads in the window first, ties by name; the cursor is an offset."""
    counts = await events.completed_by_model(window.since, window.until)
    names = await models_db.model_names(query)
    sign = -1 if order.descending else 1
    names.sort(key=lambda n: (sign * counts.get(n, 0), n))
    page = offset_page(names, order.key, request)
    by_name = await models_db.find_models([n for n, _ in page.items])
    return Page(
        items=[(by_name[n], c) for n, c in page.items if n in by_name],
        has_next=page.has_next,
        has_previous=page.has_previous,
        count=page.count,
        window_downloads={by_name[n].id: counts.get(n, 0) for n, _ in page.items if n in by_name},
    )


async def list_versions(query: VersionQuery, order: VersionOrder, request: PageRequest) -> Page[ModelVersion]:
    return await models_db.page_versions(query, order, request)


async def model_by_id(scope: Scope, model_id: Any) -> RegisteredModel | None:
    return visible(scope, await models_db.get_model(model_id))


async def version_by_id(scope: Scope, version_id: Any) -> ModelVersion | None:
    return visible(scope, await models_db.get_version(version_id))
