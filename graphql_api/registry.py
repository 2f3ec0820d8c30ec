"""Registering, finding, updating, listing and archiving models and their versions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeVar

from . import checksums
from .analytics import events
from .auth import Principal
from .db import models as models_db
from .db import projects as projects_db
from .db import uploads as uploads_db
from .documents import ModelVersion, RegisteredModel, utcnow
from .errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    ModelNotFound,
    ModelVersionAlreadyExists,
    ModelVersionNotFound,
    ObjectDeleted,
    StorageObjectNotFound,
    StorageUnavailable,
)
from .model_cache import ModelCache
from .pagination import Page, PageRequest, empty_page, offset_page
from .queries import DownloadWindow, ModelOrder, ModelOrderField, ModelQuery, VersionOrder, VersionQuery
from .roles import ProjectRole
from .scope import ProjectDirectory, Scope, has_role
from .services import Services
from .storage import ObjectInfo, ObjectStore, StorageScope, validate_bucket, validate_key
from .validation import (
    validate_alias,
    validate_description,
    validate_metadata,
    validate_name,
    validate_tags,
    validate_version,
)


@dataclass(kw_only=True)
class VersionRequest:
    """What every new version declares, whether its artifact is registered in place or uploaded first."""

    name: str
    project_name: str
    owner: str
    version: int | None = None
    description: str | None = None
    tags: list[str] | None = None
    metadata: Any = None
    sha256: str | None = None

    def validate(self) -> None:
        validate_name(self.name)
        validate_version(self.version)
        validate_name(self.project_name, "projectName")
        validate_description(self.description)
        self.tags = validate_tags(self.tags)
        self.metadata = validate_metadata(self.metadata)
        self.sha256 = checksums.validate_sha256(self.sha256)

    def notes(self) -> dict[str, Any]:
        """The `VersionNotes` fields of the documents this request makes."""
        return {
            "name": self.name,
            "project_name": self.project_name,
            "owner": self.owner,
            "description": self.description,
            "tags": self.tags or [],
            "metadata": self.metadata or {},
        }


@dataclass(kw_only=True)
class RegisterRequest(VersionRequest):
    bucket: str
    key: str

    def validate(self) -> None:
        super().validate()
        validate_bucket(self.bucket)
        validate_key(self.key)

    def version_doc(self, version: int, info: ObjectInfo, checksum: dict[str, Any]) -> ModelVersion:
        return ModelVersion(
            **self.notes(),
            version=version,
            bucket=self.bucket,
            key=self.key,
            size_bytes=info.size,
            etag=info.etag,
            content_type=info.content_type,
            **checksum,
        )


def require_project_role(project: str, who: Principal, role: ProjectRole, action: str) -> None:
    """Forbidden unless `who` holds `role` (or more) in `project`, by grant or by its global role. The
    message does not name the project: the same text whether or not it exists (or is visible)."""
    if not has_role(who, project, role):
        raise Forbidden(f"{action} needs the {role.value} role in the project; {who.engineer} lacks it")


async def used_elsewhere(scope: Scope, bucket: str, key: str) -> bool:
    """Whether a version or an upload of a project `scope` cannot write (an INTERNAL one it only reads
    too) already locates this object: then no new version of the caller's may adopt it (to download
    it), and the refusal is StorageObjectNotFound, exactly as for a missing object (type, code, message),
    so it confirms nothing. Two indexed lookups side by side; none for a caller who writes everywhere."""
    writable = scope.writable()
    if writable is None:
        return False
    taken = await asyncio.gather(
        models_db.object_used_outside(bucket, key, writable),
        uploads_db.object_used_outside(bucket, key, writable),
    )
    return any(taken)


async def adopt(store: ObjectStore, scope: Scope, bucket: str, key: str) -> ObjectInfo:
    """The object a new version is to locate, unless it is missing or `used_elsewhere` (both
    StorageObjectNotFound). The lookups and the store's HEAD run together and are both awaited, so a
    refusal costs what a miss costs."""

    async def head() -> ObjectInfo | None:
        try:
            return await store.head(bucket, key)
        except StorageObjectNotFound:
            return None

    taken, info = await asyncio.gather(used_elsewhere(scope, bucket, key), head())
    if taken or info is None:
        raise StorageObjectNotFound(bucket, key)
    return info


def require_owner(model: RegisteredModel, who: Principal) -> None:
    """A model is changed by its owner (an ENGINEER of its project) or by a MAINTAINER of its project
    (an ADMIN is one everywhere)."""
    require_project_role(model.project_name, who, ProjectRole.ENGINEER, f"changing model {model.name!r}")
    if who.engineer != model.owner and not has_role(who, model.project_name, ProjectRole.MAINTAINER):
        raise Forbidden(
            f"only the owner of model {model.name!r} ({model.owner}) or a maintainer of its project "
            "may change it"
        )


def check_joins(model: RegisteredModel, req: VersionRequest, who: Principal) -> None:
    """A new version joins an existing model only in its project, and only from its owner or an admin."""
    if model.project_name != req.project_name:
        raise InvalidInput("projectName", f"model {req.name!r} belongs to project {model.project_name!r}")
    require_owner(model, who)


async def new_project(name: str, directory: ProjectDirectory | None) -> None:
    """The project document of a project whose first model was just created (INTERNAL, no grants)."""
    if await projects_db.ensure(name) and directory is not None:
        directory.forget()  # callers without a global role see the new project at once on this instance


async def _model_for(req: RegisterRequest, who: Principal, scope: Scope) -> tuple[RegisteredModel, bool]:
    """The model a new version joins, and whether this registration created it: created by its first
    registration, else checked against it (same project; the owner or a maintainer). A model of a project
    the caller cannot read is refused as `projectName` taken by another project, naming neither."""
    model = await models_db.find_model(req.name)
    if model is not None and not scope.can_read(model.project_name):
        raise InvalidInput("name", f"the model name {req.name!r} is taken")
    if model is None:
        fresh = RegisteredModel(
            name=req.name,
            project_name=req.project_name,
            owner=req.owner,
            description=req.description,
            tags=req.tags or [],
        )
        if await models_db.insert_model(fresh):
            return fresh, True
        model = await models_db.find_model(req.name)  # a concurrent first registration won
        assert model is not None
    check_joins(model, req, who)
    return model, False


async def register_model(
    store: ObjectStore,
    req: RegisterRequest,
    who: Principal,
    storage: StorageScope,
    scope: Scope,
    directory: ProjectDirectory | None = None,
) -> ModelVersion:
    """Validates, checks the artifact, and inserts; the unique (name, version) index decides every race.
    A location outside `storage` is refused before the store is asked anything, so nothing leaks about it;
    one another project uses is refused as a missing object (`adopt`).

    Three sequential DB round trips on the common paths: the model (found, or inserted after a miss),
    the highest version off the (name, version) index (skipped for a model just created, and sent
    alongside the model's updatedAt), and the version's insert. Concurrent auto-numbered registrations
    retry on the unique index, so 50 at once still get 1..50 with no gap."""
    req.validate()
    require_project_role(req.project_name, who, ProjectRole.ENGINEER, "registering a model")
    storage.check(req.bucket, req.key)
    info = await adopt(store, scope, req.bucket, req.key)  # before anything compares its SHA-256
    checksum = checksums.initial_fields(req.sha256, info)  # a known mismatch is refused before any write
    _, created = await _model_for(req, who, scope)
    if created:
        await new_project(req.project_name, directory)
    if req.version is not None:
        doc = req.version_doc(req.version, info, checksum)
        if not await models_db.insert_version(doc):
            raise ModelVersionAlreadyExists(req.name, req.version)
        if not created:
            await models_db.touch(req.name, doc.created_at)
        return doc
    if created:
        doc = req.version_doc(1, info, checksum)
        if await models_db.insert_version(doc):
            return doc
    touched = False
    while True:
        if touched:
            latest = await models_db.max_version(req.name)
        else:
            latest, _ = await asyncio.gather(
                models_db.max_version(req.name), models_db.touch(req.name, utcnow())
            )
            touched = True
        doc = req.version_doc(latest + 1, info, checksum)
        if await models_db.insert_version(doc):
            return doc
        # another registration took this number: read the new highest and take the next one


async def register(
    services: Services,
    req: RegisterRequest,
    who: Principal,
    scope: Scope,
    storage: StorageScope | None = None,
) -> ModelVersion:
    """`register_model` (within `storage`, by default the configured one), counted in the registrations
    metric by outcome."""
    metrics = services.metrics
    try:
        version = await register_model(
            services.store, req, who, storage or services.scope, scope, services.projects
        )
    except DomainError as exc:
        metrics.count_registration(exc.code)
        raise
    except StorageUnavailable:
        metrics.count_registration("storage_unavailable")
        raise
    metrics.count_registration("created")
    return version


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
    model = await require_model(scope, name)
    require_owner(model, who)
    fields: dict[str, Any] = {"updated_at": utcnow()}
    if description is not None:
        validate_description(description)
        fields["description"] = description
    if tags is not None:
        fields["tags"] = validate_tags(tags)
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
