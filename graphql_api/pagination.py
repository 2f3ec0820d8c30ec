"""Relay pages and their opaque cursors: a cursor carries the sort key of the last row seen."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from bson import ObjectId

from .errors import InvalidInput

MAX_PAGE = 100
DEFAULT_PAGE = 20


def check_first(first: int | None, field: str = "first") -> int:
    if first is None:
        return DEFAULT_PAGE
    if first < 1 or first > MAX_PAGE:
        raise InvalidInput(field, f"must be between 1 and {MAX_PAGE}, got {first}")
    return first


@dataclass(frozen=True)
class PageRequest:
    """Which page of a connection: forward (`first` after `after`) or backward (`last` before `before`)."""

    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    @property
    def backward(self) -> bool:
        return self.last is not None or self.before is not None

    @property
    def size(self) -> int:
        if self.backward:
            if self.first is not None or self.after is not None:
                raise InvalidInput("last", "page forward (first/after) or backward (last/before), not both")
            return check_first(self.last, "last")
        return check_first(self.first)

    @property
    def cursor(self) -> str | None:
        return self.before if self.backward else self.after


def _enc(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$d": value.isoformat()}
    if isinstance(value, ObjectId):
        return {"$o": str(value)}
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict):
        if "$d" in value:
            return datetime.fromisoformat(value["$d"])
        if "$o" in value:
            return ObjectId(value["$o"])
        raise ValueError("unknown cursor value")
    return value


def encode_cursor(order: str, values: list[Any]) -> str:
    raw = json.dumps({"o": order, "k": [_enc(v) for v in values]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: str, arity: int) -> list[Any]:
    """The sort key inside `cursor`; a cursor made for another order or shape is malformed here."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("o") != order:
            raise ValueError("cursor belongs to another ordering")
        keys = data["k"]
        if not isinstance(keys, list) or len(keys) != arity:
            raise ValueError("cursor has the wrong shape")
        return [_dec(k) for k in keys]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput("after", "malformed cursor") from exc


T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a connection: rows with their cursors, and whether more lie either side."""

    items: list[tuple[T, str]]
    has_next: bool
    has_previous: bool
    # Counting can cost a scan of every matching row, so it runs only when a client asks for it.
    count: Callable[[], Awaitable[int]]
    # Per row id: completed downloads in the window of a downloads-ordered page.
    window_downloads: dict[Any, int] = field(default_factory=dict)


def empty_page() -> Page[Any]:
    """The page of a read whose scope leaves nothing visible: no rows, no cursors, a count of 0."""

    async def zero() -> int:
        return 0

    return Page(items=[], has_next=False, has_previous=False, count=zero)


def offset_page(rows: list[T], order: str, request: PageRequest) -> Page[T]:
    """A page of an in-memory ordered list whose cursors are positions (rows 1..n)."""
    limit = request.size
    position = 0 if request.cursor is None else decode_cursor(request.cursor, order, 1)[0]
    if not isinstance(position, int) or not 0 <= position <= len(rows):
        raise InvalidInput("before" if request.backward else "after", "malformed cursor")
    if request.backward:
        end = position - 1 if request.cursor is not None else len(rows)
        start = max(0, end - limit)
    else:
        start = position
        end = min(len(rows), start + limit)
    items = [(rows[i], encode_cursor(order, [i + 1])) for i in range(start, end)]

    async def count() -> int:
        return len(rows)

    return Page(items=items, has_next=end < len(rows), has_previous=start > 0, count=count)
