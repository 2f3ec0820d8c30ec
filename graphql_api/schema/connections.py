"""Relay connections, once: generic `Connection[T]` and `Edge[T]` (Strawberry names `Connection[Model]`
`ModelConnection`), `PageInfo`, the paging arguments, and the words a node type describes its pages with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

import strawberry
from graphql import GraphQLObjectType, GraphQLSchema
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryObjectDefinition

from ..pagination import Page, PageRequest

FIRST = Annotated[int | None, strawberry.argument(description="Page forward: at most this many (1..100).")]
AFTER = Annotated[str | None, strawberry.argument(description="Page forward from this cursor.")]
LAST = Annotated[int | None, strawberry.argument(description="Page backward: at most this many (1..100).")]
BEFORE = Annotated[str | None, strawberry.argument(description="Page backward from this cursor.")]

NodeT = TypeVar("NodeT")
DocT = TypeVar("DocT")


@dataclass(frozen=True)
class PageWords:
    """How the connection and edge types of one node type describe themselves in the schema."""

    page: str  # the connection type, e.g. "A page of models."
    edge: str  # the edge type, e.g. "One model and its cursor."
    one: str  # an edge's node, e.g. "The model."
    many: str  # the nodes of a page, e.g. "models"
    total: str = ""  # `totalCount`, on connections that count
    cursor: str = "Pass as `after`/`before` to page from here."


class Paged(Protocol):
    page_words: ClassVar[PageWords]


@strawberry.type(description="Where a page sits in its connection (Relay).")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More rows follow `endCursor`.")
    has_previous_page: bool = strawberry.field(description="More rows precede `startCursor`.")
    start_cursor: str | None = strawberry.field(description="The cursor of the first row of this page.")
    end_cursor: str | None = strawberry.field(description="The cursor of the last row of this page.")


def page_info(page: Page[Any]) -> PageInfo:
    items = page.items
    return PageInfo(
        has_next_page=page.has_next,
        has_previous_page=page.has_previous,
        start_cursor=items[0][1] if items else None,
        end_cursor=items[-1][1] if items else None,
    )


def page_request(first: int | None, after: str | None, last: int | None, before: str | None) -> PageRequest:
    return PageRequest(first=first, after=after, last=last, before=before)


# The descriptions below are templates over PageWords' fields, filled per node type by `describe_pages`.
@strawberry.type(description="{edge}")
class Edge(Generic[NodeT]):
    node: NodeT = strawberry.field(description="{one}")
    cursor: str = strawberry.field(description="{cursor}")


EDGES = "The {many} of this page with their cursors."
NODES = "The {many} of this page, for clients that need no cursors."


@strawberry.type(description="{page}")
class _Page(Generic[NodeT]):
    edges: Sequence[Edge[NodeT]] = strawberry.field(description=EDGES)
    page_info: PageInfo = strawberry.field(description="Where this page sits.")

    def _nodes(self) -> list[NodeT]:
        return [edge.node for edge in self.edges]

    @classmethod
    def _of(cls, page: Page[DocT], node: Callable[[DocT], NodeT], **more: Any) -> Self:
        edges = [Edge(node=node(doc), cursor=cursor) for doc, cursor in page.items]
        return cls(edges=edges, page_info=page_info(page), **more)


@strawberry.type(description="{page}")
class Connection(_Page[NodeT]):
    @strawberry.field(description=NODES)
    def nodes(self) -> list[NodeT]:
        return self._nodes()

    @classmethod
    def of(cls, page: Page[DocT], node: Callable[[DocT], NodeT]) -> Self:
        return cls._of(page, node)


# Named "Connection" too, so that `CountedConnection[Model]` is `ModelConnection` in the schema.
@strawberry.type(name="Connection", description="{page}")
class CountedConnection(_Page[NodeT]):
    """A connection whose `totalCount` counts the rows of every page (only when a client asks for it)."""

    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="{total}")
    async def total_count(self) -> int:
        return await self.count()

    # After `totalCount`, as in the SDL before connections were generic.
    @strawberry.field(description=NODES)
    def nodes(self) -> list[NodeT]:
        return self._nodes()

    @classmethod
    def of(cls, page: Page[DocT], node: Callable[[DocT], NodeT]) -> Self:
        return cls._of(page, node, count=page.count)


def describe_pages(schema: GraphQLSchema) -> None:
    """Fills the description templates of every specialised connection and edge type with the `page_words`
    of its node type (Strawberry copies a generic's descriptions as they are)."""
    for kind in schema.type_map.values():
        definition = (kind.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if not isinstance(definition, StrawberryObjectDefinition) or definition.concrete_of is None:
            continue
        if not issubclass(definition.concrete_of.origin, Edge | _Page):
            continue
        assert isinstance(kind, GraphQLObjectType), kind.name
        words = asdict(cast(Paged, definition.type_var_map[NodeT.__name__]).page_words)
        kind.description = (kind.description or "").format(**words)
        for field in kind.fields.values():
            field.description = (field.description or "").format(**words)
