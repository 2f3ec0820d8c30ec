"""Keyset pages over a Beanie collection, with the time windows SecantusDB needs to stop scanning early."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Branch:
    """Rows equal to a cursor on the sort's first fields (`query`, read from the database) and beyond it on
    the next one (`beyond`: (field, direction, value); None when `query` says so itself)."""

    query: dict[str, Any]
    beyond: tuple[str, int, Any] | None = None

    def keeps(self, doc: Any) -> bool:
        if self.beyond is None:
            return True
        name, direction, bound = self.beyond
        value = doc.id if name == "_id" else getattr(doc, name)
        value, bound = _comparable(value), _comparable(bound)
        return bool(value > bound if direction > 0 else value < bound)


def keyset_branches(sort: Sequence[tuple[str, int]], values: list[Any]) -> list[Branch]:
    """The rows strictly after `values` in the order `sort` (a lexicographic comparison), one branch per sort
    field, nearest first: equal to `values` on the fields before field i, and beyond it on field i.

    Not one `$or` of them, as MongoDB would plan it: SecantusDB 0.7 plans no index for a filter with a
    top-level `$or` and scans the collection (a page of 34 download events after a cursor: 3.9 s at
    100,000 events, 8 ms without the `$or`), so every page after a cursor was a collection scan. Each branch
    is read as its own index range instead, nearest first, until the page is full. In a branch that ties on
    the leading field, the comparison of the next field is made here, not in the query: SecantusDB plans
    no index for a second range beside the first (`{model_name, started_at: [t, t], _id: {$lt}}` scanned
    the collection, 1.7 s), so the query is the equalities alone (the rows tied with the cursor: a few).
    The equalities are plain ones: see `pinned` for how they meet a condition the query already has."""
    branches: list[Branch] = []
    for i, (name, direction) in enumerate(sort):
        equal = {f: values[j] for j, (f, _) in enumerate(sort[:i])}
        if i == 0:
            branches.append(Branch({name: {"$gt" if direction > 0 else "$lt": values[i]}}))
        else:
            branches.append(Branch(equal, (name, direction, values[i])))
    return branches[::-1]


def pinned(base: dict[str, Any], equal: dict[str, Any]) -> dict[str, Any] | None:
    """`base` with each field of `equal` pinned to its value: the value replaces a condition of `base` on
    the field that it satisfies (None when it fails one: no row can match). Not a closed range merged into
    the condition: SecantusDB 0.7 misreads an inclusive bound on a field between others in a compound index
    (`{project_name: p, created_at: {$gte: t, $lte: t}}` on (project_name, created_at, _id) found none of
    the 8 models created at t; the equality finds them), and not a `$and`, which it runs as a collection scan.
    A condition this cannot judge is kept beside the equality (`merge_filters`)."""
    flt = dict(base)
    for name, value in equal.items():
        cond = flt.get(name)
        verdict = _satisfies(value, cond) if name in flt else True
        if verdict is False:
            return None
        if verdict is True:
            flt[name] = value
        else:
            flt = merge_filters(flt, {name: value})
    return flt


_CHECKS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda v, b: bool(v > b),
    "$gte": lambda v, b: bool(v >= b),
    "$lt": lambda v, b: bool(v < b),
    "$lte": lambda v, b: bool(v <= b),
    "$ne": lambda v, b: bool(v != b),
}


def _satisfies(value: Any, cond: Any) -> bool | None:
    """Whether `value` meets a filter condition made of comparisons (None: some other condition, or values
    that do not compare: not judged here)."""
    if not isinstance(cond, dict):
        return None
    if not cond or not set(cond) <= set(_CHECKS):
        return None
    try:
        return all(_CHECKS[op](_comparable(value), _comparable(bound)) for op, bound in cond.items())
    except TypeError:
        return None


def _comparable(value: Any) -> Any:
    """A datetime as an aware one (the database gives naive UTC ones), anything else as it is."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


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
    earliest: Callable[[], Awaitable[datetime | None]] | None = None,
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

    The same time windows serve a scan that runs oldest first on `newest_first_on` (the ascending order, or
    `last` rows of the newest-first one, read in the inverted order): they grow forward from the cursor's
    time, else from the filter's lower bound on the field, else from `earliest()` (a moment at or a little
    before the earliest row, read only then). The windows have no lower bound of their own, so the answer
    does not depend on that moment: a wrong one costs only time (its windows are empty, or hold more).
    Without any of the three, the unbounded query is the only one.
    """
    limit, cursor = request.size, request.cursor
    scan = _inverted(sort) if request.backward else sort
    branches = [Branch({})]
    anchor: datetime | None = None
    if cursor is not None:
        values = decode_cursor(cursor, order, len(sort))
        branches = keyset_branches(scan, values)
        anchor = values[0] if isinstance(values[0], datetime) else None
    docs: list[D] = []
    for branch in branches:
        need = limit + 1 - len(docs)
        if need <= 0:
            break
        if branch.beyond is not None:  # tied with the cursor: all read, the rest of the key compared here
            ties = pinned(base, branch.query)
            tied = [] if ties is None else await document.find(ties).sort(scan).to_list()
            docs += [doc for doc in tied if branch.keeps(doc)][:need]
            continue
        flt = merge_filters(base, branch.query)
        # The last branch (beyond the cursor on the leading field, or no cursor) is the range worth windows.
        windows = await _windows(flt, scan, anchor, newest_first_on, ascending_string_on, earliest)
        for window in [*windows, None]:
            query = flt if window is None else merge_filters(flt, window)
            found = await document.find(query).sort(scan).limit(need).to_list()
            if len(found) >= need:
                break
        docs += found

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


async def _windows(
    flt: dict[str, Any],
    scan: Sort,
    anchor: datetime | None,
    time_on: str | None,
    ascending_string_on: str | None,
    earliest: Callable[[], Awaitable[datetime | None]] | None,
) -> list[dict[str, Any]]:
    """The growing windows `keyset_page` looks for a page in before the unbounded query (none when the
    scan does not lead with the windowed field). `anchor` is the cursor's time, if any."""
    windows: list[dict[str, Any]] = []
    if time_on is not None and scan[0] == (time_on, SortDirection.DESCENDING):
        if anchor is None:
            anchor = datetime.now(UTC)
            until = _time_bound(flt, time_on, "$lt")
            anchor = min(anchor, until) if until is not None else anchor
        windows = [{time_on: {"$gte": anchor - window}} for window in WINDOWS]
    elif time_on is not None and scan[0] == (time_on, SortDirection.ASCENDING):
        if anchor is None:
            starts = [_time_bound(flt, time_on, "$gte"), await earliest() if earliest is not None else None]
            anchor = max((s for s in starts if s is not None), default=None)
        if anchor is not None:
            windows = [{time_on: {"$lt": anchor + window}} for window in WINDOWS]
    elif ascending_string_on is not None and scan[0] == (ascending_string_on, SortDirection.ASCENDING):
        bounds = _string_range(flt, ascending_string_on)
        if bounds is not None:
            windows = [{ascending_string_on: {"$lt": t}} for t in string_windows(*bounds)]
    return windows


def _time_bound(flt: dict[str, Any], field: str, op: str) -> datetime | None:
    """The moment `flt` bounds the datetime `field` by with `op` ($gte or $lt), if it does so plainly."""
    cond = flt.get(field)
    value = cond.get(op) if isinstance(cond, dict) else None
    return value if isinstance(value, datetime) else None
