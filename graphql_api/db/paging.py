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

# Time windows tried in turn for newest-first pages: most pages fill from the first one.
WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=31), timedelta(days=366))


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
) -> Page[D]:
    """One page of `document` rows matching `base` in `sort` order: `first` rows after a cursor, or the
    `last` rows before one (read in the inverted order, then turned round).

    `count_all`, when given, counts an unfiltered collection faster than the collection itself can.

    With `newest_first_on` (a datetime field leading a descending scan), the page is looked for in growing
    time windows before the unbounded query: SecantusDB applies a limit only after scanning the whole index
    range, so a bounded range is what keeps the first pages of a large collection fast. The answer is the
    same: a window is used only when it holds a full page, and every row outside it sorts later.
    """
    limit, cursor = request.size, request.cursor
    scan = _inverted(sort) if request.backward else sort
    flt = base
    anchor = datetime.now(UTC)
    if cursor is not None:
        values = decode_cursor(cursor, order, len(sort))
        flt = merge_filters(base, keyset_after(scan, values))
        anchor = values[0] if isinstance(values[0], datetime) else anchor
    windowed = newest_first_on is not None and scan[0] == (newest_first_on, SortDirection.DESCENDING)
    windows: tuple[timedelta | None, ...] = (*WINDOWS, None) if windowed else (None,)
    for window in windows:
        query = flt
        if window is not None and newest_first_on is not None:
            query = merge_filters(flt, {newest_first_on: {"$gte": anchor - window}})
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
