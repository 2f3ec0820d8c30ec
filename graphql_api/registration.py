"""Registering a model version: the request, the artifact adopted, the model joined or created, and who
may add or change a model (project roles, ownership)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from . import checksums
from .auth import Principal
from .db import models as models_db
from .db import projects as projects_db
from .db import uploads as uploads_db
from .documents import ModelVersion, RegisteredModel, utcnow
from .errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    ModelVersionAlreadyExists,
    StorageObjectNotFound,
    StorageUnavailable,
)
from .roles import ProjectRole
from .scope import ProjectDirectory, Scope, has_role
from .services import Services
from .storage import ObjectInfo, ObjectStore, StorageScope, validate_bucket, validate_key
from .validation import (
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


async def new_project(name: str, directory: ProjectDirectory) -> None:
    """The project document of a project whose first model was just created (INTERNAL, no grants), unless
    `directory` has seen the project already."""
    if directory.known(name):
        return
    if await projects_db.ensure(name):
        directory.forget()  # callers without a global role see the new project at once on this instance


async def _model_for(
    req: RegisterRequest, who: Principal, scope: Scope, likely_new: bool = False
) -> tuple[RegisteredModel, bool]:
    """The model a new version joins, and whether this registration created it: created by its first
    registration, else checked against it (same project; the owner or a maintainer). A model of a project
    the caller cannot read is refused as `projectName` taken by another project, naming neither.

    `likely_new` (the in-memory catalogue does not hold the name) tries the insert first and reads the
    model only when the unique index refuses it: a hint that orders two steps, never a decision."""
    model = None if likely_new else await models_db.find_model(req.name)
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
        model = await models_db.find_model(req.name)  # taken: by a concurrent registration, or a stale hint
        assert model is not None
    if not scope.can_read(model.project_name):
        raise InvalidInput("name", f"the model name {req.name!r} is taken")
    check_joins(model, req, who)
    return model, False


async def register_model(
    services: Services, req: RegisterRequest, who: Principal, scope: Scope, storage: StorageScope
) -> ModelVersion:
    """Validates, checks the artifact, and inserts; the unique (name, version) index decides every race.
    A location outside `storage` is refused before the store is asked anything, so nothing leaks about it;
    one another project uses is refused as a missing object (`adopt`).

    Three sequential DB round trips on the common paths: the model (found, or inserted after a miss; a
    name the in-memory catalogue does not hold is inserted first, no read), the highest version off the
    (name, version) index (skipped for a model just created, and sent alongside the model's updatedAt),
    and the version's insert. Concurrent auto-numbered registrations retry on the unique index, so 50 at
    once still get 1..50 with no gap."""
    req.validate()
    require_project_role(req.project_name, who, ProjectRole.ENGINEER, "registering a model")
    storage.check(req.bucket, req.key)
    info = await adopt(services.store, scope, req.bucket, req.key)  # before anything compares its SHA-256
    checksum = checksums.initial_fields(req.sha256, info)  # a known mismatch is refused before any write
    catalogue = services.models.catalogue
    catalogue.warm()
    _, created = await _model_for(req, who, scope, catalogue.loaded and req.name not in catalogue)
    if created:
        await new_project(req.project_name, services.projects)
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
        version = await register_model(services, req, who, scope, storage or services.scope)
    except DomainError as exc:
        metrics.count_registration(exc.code)
        raise
    except StorageUnavailable:
        metrics.count_registration("storage_unavailable")
        raise
    metrics.count_registration("created")
    return version
