"""Relay's root fields `node(id:)` and `nodes(ids:)`: any object by its global id, null where it does not
exist or the caller's scope may not read its project (the same answer: an id tells nothing it hides)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol

import strawberry
from bson import ObjectId

from .. import aliases, registry, webhooks
from ..analytics import events
from ..errors import InvalidInput
from ..scope import Scope
from .context import Info
from .downloads import DownloadEvent
from .node import Node, parse_global_id
from .types import AliasChange, Model, ModelVersion
from .webhooks import Webhook

MAX_IDS = 100
# Reads of one `nodes` call in flight at once: enough to overlap round trips, few enough that one request
# cannot take the database's connection pool.
READS_AT_ONCE = 8


class _Loader(Protocol):
    async def __call__(self, scope: Scope, key: ObjectId, /) -> Any: ...


async def _webhook(scope: Scope, key: ObjectId) -> Any:
    return await webhooks.visible(scope.principal, key)


# A global id's type name → how to read its document (None where the scope may not read it) and how to turn
# that document into the object.
_LOADERS: dict[str, tuple[_Loader, Callable[[Any], Node]]] = {
    "Model": (registry.model_by_id, Model.from_doc),
    "ModelVersion": (registry.version_by_id, ModelVersion.from_doc),
    "DownloadEvent": (events.event_by_id, DownloadEvent.from_doc),
    "AliasChange": (aliases.change_by_id, AliasChange.from_doc),
    "Webhook": (_webhook, Webhook.from_doc),
}


async def _load(scope: Scope, type_name: str, key: ObjectId) -> Node | None:
    if type_name not in _LOADERS:
        return None
    read, node = _LOADERS[type_name]
    doc = await read(scope, key)
    return node(doc) if doc else None


async def load_many(scope: Scope, ids: Sequence[str]) -> list[Node | None]:
    """The objects of `ids` in order: every id is checked before any read, each distinct id is read once,
    and at most READS_AT_ONCE reads run at a time (a failing read cancels the others)."""
    parsed = [parse_global_id(i) for i in ids]
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def one(type_name: str, key: ObjectId) -> Node | None:
        async with gate:
            return await _load(scope, type_name, key)

    distinct = list(dict.fromkeys(parsed))
    tasks = [asyncio.create_task(one(*p)) for p in distinct]
    try:
        found = dict(zip(distinct, await asyncio.gather(*tasks), strict=True))
    finally:
        for task in tasks:
            task.cancel()
    return [found[p] for p in parsed]


@strawberry.type
class NodeQueries:
    @strawberry.field(description="Any object by its global id (Relay), or null.")
    async def node(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="A global id.")]
    ) -> Node | None:
        return await _load(info.context.scope, *parse_global_id(id))

    @strawberry.field(description="Objects by their global ids, in order; null where one does not exist.")
    async def nodes(
        self,
        info: Info,
        ids: Annotated[list[strawberry.ID], strawberry.argument(description="Up to 100 global ids.")],
    ) -> list[Node | None]:
        if len(ids) > MAX_IDS:
            raise InvalidInput("ids", f"at most {MAX_IDS} ids")
        return await load_many(info.context.scope, ids)
