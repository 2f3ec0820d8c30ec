"""Strawberry output types and inputs of the registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from .. import documents, queries
from ..pagination import Page
from .context import Info
from .scalars import Long

ModelOrder = queries.ModelOrder
strawberry.enum(ModelOrder, description="How `models` sorts its rows.")


@strawberry.type(name="Model", description="One registered version of a model.")
class ModelType:
    id: strawberry.ID
    name: str
    version: int
    project_name: str
    owner: str
    description: str | None
    tags: list[str]
    metadata: JSON
    bucket: str
    key: str
    size_bytes: Long
    etag: str
    content_type: str
    created_at: datetime
    archived: bool

    @strawberry.field(description="`s3://bucket/key`.")
    def storage_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @strawberry.field(description="Completed downloads of this version (batched: one query per request).")
    async def download_count(self, info: Info) -> int:
        return (await info.context.download_totals.load((self.name, self.version))).completed

    @strawberry.field(description="When the last completed download of this version finished.")
    async def last_downloaded_at(self, info: Info) -> datetime | None:
        return (await info.context.download_totals.load((self.name, self.version))).last_downloaded_at

    @classmethod
    def from_doc(cls, doc: documents.Model) -> ModelType:
        return cls(
            id=strawberry.ID(str(doc.id)),
            name=doc.name,
            version=doc.version,
            project_name=doc.project_name,
            owner=doc.owner,
            description=doc.description,
            tags=doc.tags,
            metadata=cast(JSON, doc.metadata),
            bucket=doc.bucket,
            key=doc.key,
            size_bytes=doc.size_bytes,
            etag=doc.etag,
            content_type=doc.content_type,
            created_at=doc.created_at,
            archived=doc.archived,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class ModelEdge:
    node: ModelType
    cursor: str
    window_downloads: int | None = strawberry.field(
        default=None, description="Completed downloads in the window, when ordered by DOWNLOADS_DESC."
    )


@strawberry.type
class ModelConnection:
    edges: list[ModelEdge]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Rows matching the filter, across all pages (counted only when asked for).")
    async def total_count(self) -> int:
        return await self.count()

    @strawberry.field(description="The nodes of `edges`, for clients that need no cursors.")
    def nodes(self) -> list[ModelType]:
        return [edge.node for edge in self.edges]


def page_info(page: Page[Any]) -> PageInfo:
    items = page.items
    return PageInfo(
        has_next_page=page.has_next,
        has_previous_page=page.has_previous,
        start_cursor=items[0][1] if items else None,
        end_cursor=items[-1][1] if items else None,
    )


@strawberry.input
class RegisterModelInput:
    name: str = strawberry.field(description="Letters, digits and . _ - /; at most 128 characters.")
    project_name: str
    bucket: str
    key: str
    version: int | None = strawberry.field(default=None, description="Omit to take the next free version.")
    description: str | None = None
    tags: list[str] | None = None
    metadata: JSON | None = strawberry.field(default=None, description="A JSON object of at most 64 KB.")


@strawberry.input
class ModelFilter:
    name: str | None = None
    name_prefix: str | None = None
    project_name: str | None = None
    owner: str | None = None
    tags: list[str] | None = strawberry.field(default=None, description="Models carrying all of these tags.")
    created_after: datetime | None = None
    created_before: datetime | None = None
    include_archived: bool = False

    def to_query(self) -> queries.ModelQuery:
        return queries.ModelQuery(
            name=self.name,
            name_prefix=self.name_prefix,
            project_name=self.project_name,
            owner=self.owner,
            tags=self.tags or [],
            created_after=self.created_after,
            created_before=self.created_before,
            include_archived=self.include_archived,
        )
