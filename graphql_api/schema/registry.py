"""The registry's root fields: models and versions read by name, registered, changed, archived and aliased."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry

from .. import aliases, queries, registry
from ..queries import DownloadWindow
from .connections import AFTER, BEFORE, FIRST, LAST, page_info, page_request
from .context import Info
from .errors import (
    AliasNotFound,
    ChecksumMismatch,
    InvalidInput,
    ModelNotFound,
    ModelVersionAlreadyExists,
    ModelVersionArchived,
    ModelVersionNotFound,
    ObjectDeleted,
    StorageObjectNotFound,
    mutation,
)
from .inputs import (
    INPUT,
    ModelVersionInput,
    RegisterModelInput,
    RemoveAliasInput,
    RequestUploadInput,
    SetAliasInput,
    UpdateModelInput,
    UpdateModelVersionInput,
)
from .types import Model, ModelConnection, ModelEdge, ModelFilter, ModelOrder, ModelVersion

RegisterModelResult = Annotated[
    ModelVersion | ModelVersionAlreadyExists | StorageObjectNotFound | ChecksumMismatch | InvalidInput,
    strawberry.union("RegisterModelResult", description="The new version, or why it was not registered."),
]
UpdateModelResult = Annotated[
    Model | ModelNotFound | InvalidInput,
    strawberry.union("UpdateModelResult", description="The changed model, or why it was not changed."),
]
ModelVersionResult = Annotated[
    ModelVersion | ModelNotFound | ModelVersionNotFound | ObjectDeleted | InvalidInput,
    strawberry.union("ModelVersionResult", description="The changed version, or why it was not changed."),
]
SetAliasResult = Annotated[
    Model | ModelNotFound | ModelVersionNotFound | ModelVersionArchived | InvalidInput,
    strawberry.union(
        "SetAliasResult", description="The model with its aliases, or why the alias did not move."
    ),
]
RemoveAliasResult = Annotated[
    Model | ModelNotFound | AliasNotFound | InvalidInput,
    strawberry.union(
        "RemoveAliasResult", description="The model with its aliases, or why nothing was removed."
    ),
]


def new_version(input: RegisterModelInput | RequestUploadInput, info: Info) -> dict[str, Any]:
    """The `registry.VersionRequest` fields both ways of adding a version share, the caller as owner."""
    return {
        "name": input.name,
        "project_name": input.project_name,
        "owner": info.context.principal.engineer,
        "version": input.version,
        "description": input.description,
        "tags": input.tags,
        "metadata": input.metadata,
        "sha256": input.sha256,
    }


@strawberry.type
class RegistryQueries:
    @strawberry.field(description="A model by name, or null.")
    async def model(
        self, info: Info, name: Annotated[str, strawberry.argument(description="The model name.")]
    ) -> Model | None:
        doc = await registry.get_model(info.context.scope, name, info.context.model_cache)
        return Model.from_doc(doc) if doc else None

    @strawberry.field(
        description="One version by number or alias (give at most one), or the newest unarchived one; "
        "null if there is none. With `at`, the alias as it stood then (from the alias history): null "
        "before it was first set or while it was removed."
    )
    async def model_version(
        self,
        info: Info,
        name: Annotated[str, strawberry.argument(description="The model name.")],
        version: Annotated[int | None, strawberry.argument(description="A version number.")] = None,
        alias: Annotated[str | None, strawberry.argument(description="An alias, e.g. `prod`.")] = None,
        at: Annotated[
            datetime | None,
            strawberry.argument(description="Resolve `alias` as it stood at this time (needs `alias`)."),
        ] = None,
    ) -> ModelVersion | None:
        scope = info.context.scope
        if at is not None:
            doc = await aliases.find_version_at(scope, name, version, alias, at)
        else:
            doc = await registry.find_version(scope, name, version, alias)
        return ModelVersion.from_doc(doc) if doc else None

    @strawberry.field(description="Models (one per name), newest first by default.")
    async def models(
        self,
        info: Info,
        filter: Annotated[ModelFilter | None, strawberry.argument(description="Which models.")] = None,
        order_by: Annotated[
            ModelOrder | None, strawberry.argument(description="Default: CREATED_AT DESC.")
        ] = None,
        first: FIRST = None,
        after: AFTER = None,
        last: LAST = None,
        before: BEFORE = None,
        downloads_since: Annotated[
            datetime | None, strawberry.argument(description="Window start for DOWNLOADS (inclusive).")
        ] = None,
        downloads_until: Annotated[
            datetime | None, strawberry.argument(description="Window end for DOWNLOADS (exclusive).")
        ] = None,
    ) -> ModelConnection:
        window = DownloadWindow(downloads_since, downloads_until)
        query = (filter or ModelFilter()).to_query()
        order = order_by.to(queries.ModelOrder) if order_by else queries.ModelOrder()
        request = page_request(first, after, last, before)
        ctx = info.context
        page = await registry.list_models(ctx.scope, query, order, request, window, ctx.model_cache)
        edges = [
            ModelEdge(node=Model.from_doc(d), cursor=c, window_downloads=page.window_downloads.get(d.id))
            for d, c in page.items
        ]
        return ModelConnection(edges=edges, page_info=page_info(page), count=page.count)


async def _set_archived(info: Info, input: ModelVersionInput, archived: bool) -> ModelVersion:
    ctx = info.context
    doc = await registry.set_archived(ctx.scope, input.name, input.version, ctx.principal, archived)
    return ModelVersion.from_doc(doc)


@strawberry.type
class RegistryMutations:
    @mutation(
        description="Registers a new version of a model from an artifact already in the object store; the "
        "first version creates the model. Only the model's owner adds versions."
    )
    async def register_model(
        self, info: Info, input: Annotated[RegisterModelInput, INPUT]
    ) -> RegisterModelResult:
        request = registry.RegisterRequest(**new_version(input, info), bucket=input.bucket, key=input.key)
        ctx = info.context
        return ModelVersion.from_doc(await registry.register(ctx.services, request, ctx.principal, ctx.scope))

    @mutation(description="Changes a model's description and tags (owner only).")
    async def update_model(self, info: Info, input: Annotated[UpdateModelInput, INPUT]) -> UpdateModelResult:
        ctx = info.context
        model = await registry.update_model(
            ctx.scope, input.name, ctx.principal, input.description, input.tags
        )
        return Model.from_doc(model)

    @mutation(description="Changes a version's description, tags and metadata (owner only).")
    async def update_model_version(
        self, info: Info, input: Annotated[UpdateModelVersionInput, INPUT]
    ) -> ModelVersionResult:
        doc = await registry.update_version(
            info.context.scope,
            input.name,
            input.version,
            info.context.principal,
            input.description,
            input.tags,
            input.metadata,
        )
        return ModelVersion.from_doc(doc)

    @mutation(
        description="Archives a version: hidden by default, downloads refused, history and stats kept "
        "(owner only)."
    )
    async def archive_model_version(
        self, info: Info, input: Annotated[ModelVersionInput, INPUT]
    ) -> ModelVersionResult:
        return await _set_archived(info, input, True)

    @mutation(description="Undoes `archiveModelVersion` (owner only).")
    async def unarchive_model_version(
        self, info: Info, input: Annotated[ModelVersionInput, INPUT]
    ) -> ModelVersionResult:
        return await _set_archived(info, input, False)

    @mutation(description="Points an alias at a version; the move is recorded (owner only).")
    async def set_alias(self, info: Info, input: Annotated[SetAliasInput, INPUT]) -> SetAliasResult:
        ctx = info.context
        model = await aliases.set_alias(ctx.scope, input.name, input.alias, input.version, ctx.principal)
        return Model.from_doc(model)

    @mutation(description="Removes an alias; the removal is recorded (owner only).")
    async def remove_alias(self, info: Info, input: Annotated[RemoveAliasInput, INPUT]) -> RemoveAliasResult:
        ctx = info.context
        return Model.from_doc(await aliases.remove_alias(ctx.scope, input.name, input.alias, ctx.principal))
