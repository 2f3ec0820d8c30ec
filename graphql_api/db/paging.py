"""Keyset pages over a Beanie collection, with the time windows SecantusDB needs to stop scanning early."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from beanie import Document, SortDirection

from ..pagination import Page, PageRequest, decode_cursor, encode_cursor
from .common import merge_filters

D = TypeVar("D", bound=Document)
Sort = list[tuple[str, SortDirection]]

# Time windows tried in turn for newest-first pages. They start small so that a burst (thousands of models
# registered in minutes, events at a high rate) still gives a small first window; an empty window costs an
# empty index range, so the small ones are nearly free where data are sparse.
WINDOWS = (
    timedelta(seconds=10), timedelta(minutes=1), timedelta(minutes=10), timedelta(hours=1),
    timedelta(days=1), timedelta(days=7), timedelta(days=31), timedelta(days=366),
)  # fmt: skip


# Characters a string key may hold (model names), in byte order; string windows step through them.
NAME_ALPHABET = "".join(sorted("-./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"))
# How far a string window's last character moves at each step: doubling, from the next character on.
STRING_STEPS = (1, 2, 4, 8, 16, 32)
MAX_STRING_WINDOWS = 10


def string_windows(start: str, end: str | None, alphabet: str = NAME_ALPHABET) -> list[str]:
    """Exclusive upper bounds t1 < t2 < … (each below `end`) for an ascending scan of string keys from
    `start`: the window [start, t) grows from the keys that continue `start` to those sharing ever shorter
    prefixes of it. SecantusDB reads a whole index range before it applies a limit, so a page found in a
    small window costs that window, not the prefix or the collection. Empty when `start` holds a character
    outside `alphabet` (its order is then not known here)."""
    if any(c not in alphabet for c in start):
        return []
    bounds: list[str] = []
    for depth in range(len(start), -1, -1):
        base = alphabet.index(start[depth]) + 1 if depth < len(start) else 0
        for step in STRING_STEPS:
            if base + step - 1 >= len(alphabet):
                break
            bound = start[:depth] + alphabet[base + step - 1]
            if (end is not None and bound >= end) or len(bounds) == MAX_STRING_WINDOWS:
                return bounds
            bounds.append(bound)
    return bounds


def _string_range(flt: dict[str, Any], field: str) -> tuple[str, str | None] | None:
    """The [start, end) that `flt` puts on the string `field` (start "" when unbounded below), or None when
    its condition is anything other than a plain range."""
    cond = flt.get(field)
    if cond is None:
        return "", None
    if not isinstance(cond, dict) or set(cond) - {"$gte", "$gt", "$lt"}:
        return None
    start, end = cond.get("$gte", cond.get("$gt", "")), cond.get("$lt")
    if not isinstance(start, str) or not (end is None or isinstance(end, str)):
        return None
    return start, end


def keyset_after(sort: Sequence[tuple[str, int]], values: list[Any]) -> dict[str, Any]:
    """The filter for rows strictly after `values` in the order `sort` (a lexicographic comparison)."""
    branches: list[dict[str, Any]] = []
    for i, (name, direction) in enumerate(sort):
        branch: dict[str, Any] = {f: values[j] for j, (f, _) in enumerate(sort[:i])}
        branch[name] = {"$gt" if direction > 0 else "$lt": values[i]}
        branches.append(branch)
    # The same condition on the leading field alone, outside the $or, gives the index scan a bound.
    first_field, first_direction = sort[0]
    return {first_field: {"$gte" if first_direction > 0 else "$lte": values[0]}, "$or": branches}


def _inverted(sort: Sort) -> Sort:
    flip = {
        SortDirection.ASCENDING: SortDirection.DESCENDING,
        SortDirection.DESCENDING: SortDirection.ASCENDING,
    }
    return [(name, flip[direction]) for name, direction in sort]


async def keyset_page(
    document: type[D],
    base: dict[str, Any],
    sort: Sort,
    order: str,
    request: PageRequest,
    newest_first_on: str | None = None,
    count_all: Callable[[], Awaitable[int]] | None = None,
    ascending_string_on: str | None = None,
) -> Page[D]:
    """One page of `document` rows matching `base` in `sort` order: `first` rows after a cursor, or the
    `last` rows before one (read in the inverted order, then turned round).

    `count_all`, when given, counts an unfiltered collection faster than the collection itself can.

    With `newest_first_on` (a datetime field leading a descending scan), the page is looked for in growing
    time windows before the unbounded query: SecantusDB applies a limit only after scanning the whole index
    range, so a bounded range is what keeps the first pages of a large collection fast. The answer is the
    same: a window is used only when it holds a full page, and every row outside it sorts later. With
    `ascending_string_on` (a string field leading an ascending scan: model names), the windows are string
    ranges (see `string_windows`) under the same rule.
    """
    limit, cursor = request.size, request.cursor
    scan = _inverted(sort) if request.backward else sort
    flt = base
    anchor = datetime.now(UTC)
    if cursor is not None:
        values = decode_cursor(cursor, order, len(sort))
        flt = merge_filters(base, keyset_after(scan, values))
        anchor = values[0] if isinstance(values[0], datetime) else anchor
    windows = _windows(flt, scan, anchor, newest_first_on, ascending_string_on)
    for window in [*windows, None]:
        query = flt if window is None else merge_filters(flt, window)
        docs = await document.find(query).sort(scan).limit(limit + 1).to_list()
        if len(docs) > limit:
            break

    async def count() -> int:
        if not base:
            if count_all is not None:
                return await count_all()
            return int(await document.get_pymongo_collection().estimated_document_count())
        return int(await document.find(base).count())

    def key(doc: D) -> list[Any]:
        return [doc.id if name == "_id" else getattr(doc, name) for name, _ in sort]

    rows = docs[:limit]
    more = len(docs) > limit
    if request.backward:
        rows.reverse()
    items = [(d, encode_cursor(order, key(d))) for d in rows]
    if request.backward:
        return Page(items=items, has_next=cursor is not None, has_previous=more, count=count)
    return Page(items=items, has_next=more, has_previous=cursor is not None, count=count)


def _windows(
    flt: dict[str, Any],
    scan: Sort,
    anchor: datetime,
    newest_first_on: str | None,
    ascending_string_on: str | None,
) -> list[dict[str, Any]]:
    """The growing windows `keyset_page` looks for a page in before the unbounded query (none when the
    scan does not lead with the windowed field)."""
    windowed = newest_first_on is not None and scan[0] == (newest_first_on, SortDirection.DESCENDING)
    windows: list[dict[str, Any]] = []
    if windowed and newest_first_on is not None:
        windows = [{newest_first_on: {"$gte": anchor - window}} for window in WINDOWS]
    elif ascending_string_on is not None and scan[0] == (ascending_string_on, SortDirection.ASCENDING):
        bounds = _string_range(flt, ascending_string_on)
        if bounds is not None:
            windows = [{ascending_string_on: {"$lt": t}} for t in string_windows(*bounds)]
    return windows
