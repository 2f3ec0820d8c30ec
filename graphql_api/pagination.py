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


def check_first(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if first < 1 or first > MAX_PAGE:
        raise InvalidInput("first", f"must be between 1 and {MAX_PAGE}, got {first}")
    return first


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
