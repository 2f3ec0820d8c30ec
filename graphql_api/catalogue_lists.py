"""The catalogue's keys: each model's entry, sorted lists of keys per order, and a filter as a predicate."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .queries import ModelOrderField, ModelQuery

Key = tuple[Any, ...]
ORDERS = (ModelOrderField.CREATED_AT, ModelOrderField.UPDATED_AT, ModelOrderField.NAME)


@dataclass(frozen=True, slots=True)
class Entry:
    """What the index knows of one model: the keys it filters and orders on."""

    id: Any
    name: str
    project_name: str
    owner: str
    tags: frozenset[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Entry:
        return cls(
            id=doc["_id"],
            name=doc["name"],
            project_name=doc["project_name"],
            owner=doc["owner"],
            tags=frozenset(doc.get("tags") or ()),
            created_at=utc(doc["created_at"]),
            updated_at=utc(doc["updated_at"]),
        )

    def key(self, order: ModelOrderField) -> Key:
        """This model's sort key in `order`: the values its cursor carries."""
        if order is ModelOrderField.NAME:
            return (self.name,)
        if order is ModelOrderField.CREATED_AT:
            return (self.created_at, self.id)
        return (self.updated_at, self.id)


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Lists:
    """One sorted list of keys per order, for one set of models (all of them, a project, a prefix...)."""

    __slots__ = ("by_order",)

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        chosen = list(entries)
        self.by_order: dict[ModelOrderField, list[Key]] = {
            order: sorted(e.key(order) for e in chosen) for order in ORDERS
        }

    def __len__(self) -> int:
        return len(self.by_order[ModelOrderField.NAME])

    def add(self, entry: Entry) -> None:
        for order, keys in self.by_order.items():
            insort(keys, entry.key(order))

    def remove(self, entry: Entry) -> None:
        for order, keys in self.by_order.items():
            key = entry.key(order)
            at = bisect_left(keys, key)
            if at < len(keys) and keys[at] == key:
                del keys[at]

    def walk(self, order: ModelOrderField, descending: bool, after: Key | None) -> Iterator[Key]:
        """Keys in `order` (reversed when `descending`) strictly after `after`."""
        keys = self.by_order[order]
        if descending:
            end = len(keys) if after is None else bisect_left(keys, after)
            return (keys[i] for i in range(end - 1, -1, -1))
        start = 0 if after is None else bisect_right(keys, after)
        return (keys[i] for i in range(start, len(keys)))


def grouped(entries: list[Entry], values: Callable[[Entry], list[str]]) -> dict[str, Lists]:
    members: dict[str, list[Entry]] = {}
    for e in entries:
        for v in values(e):
            members.setdefault(v, []).append(e)
    return {v: Lists(es) for v, es in members.items()}


def key_value(value: Any) -> Any:
    return utc(value) if isinstance(value, datetime) else value


def matcher(q: ModelQuery) -> Callable[[Entry], bool]:
    """The whole filter as a predicate (the same conditions as db/models.model_filter)."""
    names = set(q.names) if q.names else None
    prefix = q.name_prefix or ""
    projects = set(q.project_names) if q.project_names else None
    owners = set(q.owners) if q.owners else None
    tags = set(q.tags)
    after = utc(q.created_after) if q.created_after else None
    before = utc(q.created_before) if q.created_before else None

    def keep(e: Entry) -> bool:
        return (
            (names is None or e.name in names)
            and e.name.startswith(prefix)
            and (projects is None or e.project_name in projects)
            and (owners is None or e.owner in owners)
            and tags <= e.tags
            and (after is None or e.created_at >= after)
            and (before is None or e.created_at < before)
        )

    return keep
