"""Strawberry types of the registry: models, versions, aliases, their connections, filters and orders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import strawberry
from strawberry.scalars import JSON

from .. import aliases, documents, queries, registry
from .connections import (
    AFTER,
    BEFORE,
    EDGES,
    FIRST,
    LAST,
    Connection,
    CountedConnection,
    Edge,
    NodeT,
    PageWords,
    page_request,
)
from .context import Info
from .enums import graphql_enum
from .node import Node, from_doc, global_id
from .scalars import Long


@strawberry.enum(description="Which way an ordering runs.")
class OrderDirection(Enum):
    ASC = strawberry.enum_value("ASC", description="Smallest, oldest or A first.")
    DESC = strawberry.enum_value("DESC", description="Largest, newest or Z first.")


ChecksumStatus = documents.ChecksumStatus
graphql_enum(
    ChecksumStatus,
    "Where a version's SHA-256 stands.",
    PENDING="Not verified yet: the server is hashing the object in the background.",
    VERIFIED="`sha256` is the object's SHA-256.",
    MISMATCH="The object is not what registration declared: downloads are refused.",
    UNAVAILABLE="The object could not be hashed (gone, or changed since registration); see `checksumError`.",
)


@strawberry.type(description="One registered version of a model: an immutable artifact plus editable notes.")
class ModelVersion(Node):
    page_words: ClassVar[PageWords] = PageWords(
        page="A page of model versions.",
        edge="One version and its cursor.",
        one="The version.",
        many="versions",
        total="Versions matching, across all pages (counted only when asked for).",
    )

    name: str = strawberry.field(description="The model's name.")
    version: int = strawberry.field(description="The version number (1, 2, ...), immutable.")
    project_name: str = strawberry.field(description="The model's project.")
    owner: str = strawberry.field(description="Who registered this version.")
    description: str | None = strawberry.field(description="Free text about this version.")
    tags: list[str] = strawberry.field(description="Labels of this version.")
    metadata: JSON = strawberry.field(description="A JSON object of at most 64 KB (metrics, parameters...).")
    bucket: str = strawberry.field(description="The artifact's bucket, immutable.")
    key: str = strawberry.field(description="The artifact's key, immutable.")
    size_bytes: Long = strawberry.field(description="The artifact's size in bytes.")
    etag: str = strawberry.field(description="The artifact's ETag when it was registered.")
    content_type: str = strawberry.field(description="The artifact's media type.")
    created_at: datetime = strawberry.field(description="When the version was registered.")
    archived: bool = strawberry.field(
        description="Archived versions are hidden by default and refuse downloads (except, during the grace "
        "period, one that `modelhub prune` archived: see the README's Prune section)."
    )
    object_deleted: bool = strawberry.field(
        description="A tombstone: `modelhub prune` deleted the artifact; history and figures are kept, "
        "downloads answer OBJECT_DELETED."
    )
    sha256: str | None = strawberry.field(
        description="The artifact's SHA-256 (hex), once the store vouched for it or the server hashed it; "
        "null while `checksumStatus` is PENDING (or UNAVAILABLE)."
    )
    checksum_status: ChecksumStatus = strawberry.field(description="Where the artifact's checksum stands.")
    checksum_error: str | None = strawberry.field(
        description="Why the checksum is MISMATCH or UNAVAILABLE, if it is."
    )
    db_id: strawberry.Private[Any]

    @strawberry.field(description="The aliases that point at this version now.")
    async def aliases(self, info: Info) -> list[str]:
        model = await info.context.models_by_name.load(self.name)
        return sorted(a for a, v in model.aliases.items() if v == self.version)

    @strawberry.field(description="`s3://bucket/key`.")
    def storage_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @strawberry.field(description="The model this version belongs to.")
    async def model(self, info: Info) -> Model:
        found = await info.context.models_by_name.load(self.name)
        return Model.from_doc(found)

    @strawberry.field(
        description="Complete downloads of this version (partial Range fetches are not counted; batched)."
    )
    async def download_count(self, info: Info) -> int:
        return (await info.context.version_totals.load((self.name, self.version))).completed

    @strawberry.field(description="When the last complete download of this version finished.")
    async def last_downloaded_at(self, info: Info) -> datetime | None:
        return (await info.context.version_totals.load((self.name, self.version))).last_downloaded_at

    @classmethod
    def from_doc(cls, doc: documents.ModelVersion) -> ModelVersion:
        return from_doc(cls, doc, id=global_id("ModelVersion", doc.id), db_id=doc.id)


@strawberry.type(description="An alias and the version it points at.")
class ModelAlias:
    alias: str = strawberry.field(description="The alias, e.g. `prod`; never all digits.")
    version: int = strawberry.field(description="The version number it points at.")


@strawberry.type(description="One move of an alias: set, moved from one version to another, or removed.")
class AliasChange(Node):
    page_words: ClassVar[PageWords] = PageWords(
        page="A page of alias moves.", edge="One alias move and its cursor.", one="The move.", many="moves"
    )

    model_name: str = strawberry.field(description="The model whose alias moved.")
    alias: str = strawberry.field(description="The alias that moved.")
    from_version: int | None = strawberry.field(description="Where it pointed before; null when it was new.")
    to_version: int | None = strawberry.field(description="Where it points after; null when it was removed.")
    changed_by: str = strawberry.field(description="Who moved it.")
    changed_at: datetime = strawberry.field(description="When it moved.")

    @classmethod
    def from_doc(cls, doc: documents.AliasChange) -> AliasChange:
        return from_doc(cls, doc, id=global_id("AliasChange", doc.id))


AliasChangeConnection = Connection[AliasChange]
ModelVersionConnection = CountedConnection[ModelVersion]


ModelVersionOrderField = queries.VersionOrderField
graphql_enum(
    ModelVersionOrderField,
    "What versions can be ordered by.",
    name="ModelVersionOrderField",
    VERSION="The version number.",
    CREATED_AT="When the version was registered.",
)


FieldT = TypeVar("FieldT", bound=Enum)
OrderT = TypeVar("OrderT", bound=queries.CursorKeyed)


@strawberry.input(description="How to order.")
class Order(Generic[FieldT]):
    """A connection's order argument (each concrete one is a subclass, named and described by it)."""

    field: FieldT = strawberry.field(description="What to order by.")
    direction: OrderDirection = strawberry.field(default=OrderDirection.DESC, description="Which way.")

    @property
    def descending(self) -> bool:
        return self.direction is OrderDirection.DESC

    def to(self, order: Callable[[FieldT, bool], OrderT]) -> OrderT:
        """The domain's order (`queries.ModelOrder`...) this argument asks for."""
        return order(self.field, self.descending)


@strawberry.input(description="How to order versions.")
class ModelVersionOrder(Order[ModelVersionOrderField]):
    pass


@strawberry.type(description="A model: one name, its project and owner, its versions and aliases.")
class Model(Node):
    page_words: ClassVar[PageWords] = PageWords(
        page="A page of models.",
        edge="One model and its cursor.",
        one="The model.",
        many="models",
        total="Models matching the filter, across all pages (counted only when asked for).",
    )

    name: str = strawberry.field(description="Unique name: letters, digits and . _ - /.")
    project_name: str = strawberry.field(description="The project every version belongs to.")
    owner: str = strawberry.field(description="Who registered the first version; only they add versions.")
    description: str | None = strawberry.field(description="Free text about the model.")
    tags: list[str] = strawberry.field(description="Labels of the model.")
    created_at: datetime = strawberry.field(description="When its first version was registered.")
    updated_at: datetime = strawberry.field(description="When a version, alias or note last changed.")
    aliases: list[ModelAlias] = strawberry.field(description="Its aliases, by name.")

    @strawberry.field(description="The newest unarchived version, if any.")
    async def latest_version(self, info: Info) -> ModelVersion | None:
        doc = await info.context.latest_versions.load(self.name)
        return ModelVersion.from_doc(doc) if doc else None

    @strawberry.field(description="Its versions, newest first by default; archived ones only when asked for.")
    async def versions(
        self,
        first: FIRST = None,
        after: AFTER = None,
        last: LAST = None,
        before: BEFORE = None,
        include_archived: Annotated[
            bool, strawberry.argument(description="Include archived versions.")
        ] = False,
        order_by: Annotated[
            ModelVersionOrder | None, strawberry.argument(description="Default: VERSION DESC.")
        ] = None,
    ) -> ModelVersionConnection:
        query = queries.VersionQuery(self.name, include_archived)
        order = order_by.to(queries.VersionOrder) if order_by else queries.VersionOrder()
        page = await registry.list_versions(query, order, page_request(first, after, last, before))
        return ModelVersionConnection.of(page, ModelVersion.from_doc)

    @strawberry.field(description="Every move of its aliases, newest first.")
    async def alias_history(
        self, info: Info, first: FIRST = None, after: AFTER = None, last: LAST = None, before: BEFORE = None
    ) -> AliasChangeConnection:
        page = await aliases.history(info.context.scope, self.name, page_request(first, after, last, before))
        return AliasChangeConnection.of(page, AliasChange.from_doc)

    @strawberry.field(
        description="Its aliases as they stood at time `at` (replayed from the alias history), by name."
    )
    async def aliases_at(
        self, at: Annotated[datetime, strawberry.argument(description="The moment to look at.")]
    ) -> list[ModelAlias]:
        found = await aliases.aliases_at(self.name, at)
        return [ModelAlias(alias=a, version=v) for a, v in found.items()]

    @strawberry.field(description="Complete downloads across all its versions (batched).")
    async def download_count(self, info: Info) -> int:
        return (await info.context.model_totals.load(self.name)).completed

    @strawberry.field(description="When the last complete download of any version finished.")
    async def last_downloaded_at(self, info: Info) -> datetime | None:
        return (await info.context.model_totals.load(self.name)).last_downloaded_at

    @classmethod
    def from_doc(cls, doc: documents.RegisteredModel) -> Model:
        aliases = [ModelAlias(alias=a, version=v) for a, v in sorted(doc.aliases.items())]
        return from_doc(cls, doc, id=global_id("Model", doc.id), aliases=aliases)


@strawberry.type(name="Edge", description="{edge}")
class WindowEdge(Edge[NodeT]):
    """An edge of a page that may be ordered by downloads in a window."""

    window_downloads: int | None = strawberry.field(
        default=None, description="Complete downloads in the window, when ordered by DOWNLOADS."
    )


@strawberry.type(name="Connection", description="{page}")
class WindowConnection(CountedConnection[NodeT]):
    edges: Sequence[WindowEdge[NodeT]] = strawberry.field(description=EDGES)


ModelEdge = WindowEdge[Model]
ModelConnection = WindowConnection[Model]


ModelOrderField = queries.ModelOrderField
graphql_enum(
    ModelOrderField,
    "What models can be ordered by.",
    CREATED_AT="When the first version was registered.",
    UPDATED_AT="When anything about the model last changed.",
    NAME="The name.",
    DOWNLOADS="Complete downloads in `downloadsSince`..`downloadsUntil` (all time by default).",
)


@strawberry.input(description="How to order models.")
class ModelOrder(Order[ModelOrderField]):
    pass


@strawberry.input(
    description="Every given condition must hold; list conditions match any of their values (at most "
    f"{queries.MAX_FILTER_VALUES} values a list: more is INVALID_INPUT naming the list)."
)
class ModelFilter:
    names: list[str] | None = strawberry.field(default=None, description="Models with any of these names.")
    name_prefix: str | None = strawberry.field(
        default=None, description="Models whose name starts with this."
    )
    project_names: list[str] | None = strawberry.field(
        default=None, description="Models of any of these projects."
    )
    owners: list[str] | None = strawberry.field(default=None, description="Models owned by any of these.")
    tags: list[str] | None = strawberry.field(default=None, description="Models carrying all of these tags.")
    created_after: datetime | None = strawberry.field(default=None, description="createdAt ≥ this.")
    created_before: datetime | None = strawberry.field(default=None, description="createdAt < this.")

    def to_query(self) -> queries.ModelQuery:
        return queries.check_lists(
            queries.ModelQuery(
                names=self.names or [],
                name_prefix=self.name_prefix,
                project_names=self.project_names or [],
                owners=self.owners or [],
                tags=self.tags or [],
                created_after=self.created_after,
                created_before=self.created_before,
            )
        )
