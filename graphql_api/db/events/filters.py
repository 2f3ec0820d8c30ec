"""Download events matched: an `EventQuery` as a MongoDB filter (and in Python), sort orders, group keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from beanie import SortDirection

from ... import figures
from ...figures import FilterForm
from ...queries import Dimension, DownloadOrder, DownloadOrderField, EventQuery
from ..common import Condition, Translator, any_of, bound, in_list, translate
from ..paging import Sort


def _any_of_or_none(field: str) -> Translator:
    """Listed values, None meaning "no value" (a missing or null field, as `$in` matches it)."""

    def translated(values: list[Any]) -> Condition:
        named = sorted({v for v in values if v is not None})
        if None not in values:
            return {field: in_list(named)}
        return {field: {"$in": [None, *named]}}

    return translated


_FORMS: dict[FilterForm, Callable[[str], Translator]] = {
    FilterForm.ANY_OF: any_of,
    FilterForm.ANY_OF_OR_NONE: _any_of_or_none,
}
# The dimensions' filters (figures.DIMENSIONS), then the range and size.
FILTERS: Mapping[str, Translator] = {
    **{d.filter: _FORMS[d.form](d.event) for d in figures.DIMENSIONS if d.filter},
    "since": bound("started_at", "$gte"),
    "until": bound("started_at", "$lt"),
    "min_bytes": bound("bytes_sent", "$gte"),
}

# Dimension → the event field it groups by (declared in figures.DIMENSIONS).
DIMENSIONS: dict[Dimension, str] = {Dimension(d.name): d.event for d in figures.DIMENSIONS}

SORT_FIELDS: dict[DownloadOrderField, str] = {
    DownloadOrderField.STARTED_AT: "started_at",
    DownloadOrderField.BYTES_SENT: "bytes_sent",
    DownloadOrderField.DURATION: "duration_seconds",
}


def sort_of(order: DownloadOrder) -> Sort:
    direction = SortDirection.DESCENDING if order.descending else SortDirection.ASCENDING
    return [(SORT_FIELDS[order.field], direction), ("_id", direction)]


def event_filter(q: EventQuery) -> Condition:
    """The MongoDB filter for `q`; raw events keep every field, so every filter must translate."""
    q.validate()
    flt = translate(q, FILTERS)
    if flt is None:
        raise TypeError(f"a field of {type(q).__name__} has no translation for download events")
    return flt


def matches(q: EventQuery, doc: Mapping[str, Any]) -> bool:
    """Whether a stored event matches `q`, decided here as `event_filter(q)` would in the database (the
    readers of the rollups filter the few events not folded yet this way)."""
    for d in figures.DIMENSIONS:
        wanted = getattr(q, d.filter) if d.filter else None
        if not wanted:
            continue
        values = {getattr(v, "value", v) for v in wanted}
        if doc.get(d.event) not in values:
            return False
    started = doc["started_at"]
    if (q.since is not None and started < q.since) or (q.until is not None and started >= q.until):
        return False
    return q.min_bytes is None or (doc.get("bytes_sent") or 0) >= q.min_bytes
