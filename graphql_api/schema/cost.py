"""What an operation costs before it runs: every field once its fragments are spread out, multiplied by the
page sizes of the lists it sits in, and the analytics fields priced by the source that will answer them
(a raw event scan far above a rollup read).

A pure function of the document and its variables. Each fragment is priced once and its price reused at
every spread, so pricing takes time in proportion to the document's text, never to its expansion; named
fragments, inline fragments and plain selections of the same fields price the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    value_from_ast_untyped,
)

from .. import documents, queries
from ..analytics import hybrid, series, stats
from ..errors import DomainError
from .scalars import _parse_datetime

DEFAULT_PAGE = 20
PAGED_ARGS = ("first", "last")
CONNECTION_FIELDS = frozenset({"edges", "nodes"})
# What a stats read costs by where it is answered: every call STATS_BASE; a raw event scan one point more per
# RAW_EVENTS_PER_POINT events in its range, as the rollups counted them (analytics/volume.py), and a HYBRID
# answer's raw edges (at most an hour at each end) likewise by their events; rollup buckets one point per
# ROLLUP_BUCKETS_PER_POINT days of range. HOUR buckets are read from the hourly rollups, which hold a bucket
# per model (version, mode, client kind) and hour with an event (at 200,000 events a month, one bucket per 2.6
# to 7 events; 28,000 to 76,000 buckets read and grouped for a month, each about as dear as a raw event): an
# hourly read costs one point per HOURLY_EVENTS_PER_POINT events in its range, and at least one per
# ROLLUP_BUCKETS_PER_POINT hours. Priced without counts (before they were first read, or pricing a document
# alone), a raw scan and an hourly read cost RAW_SCAN_PER_DAY per day of their range, up to RAW_SCAN (a month
# or more, or an open range), and raw edges HYBRID_EDGES.
STATS_BASE = 200
RAW_EVENTS_PER_POINT = 10
RAW_SCAN = 1_500
RAW_SCAN_PER_DAY = 50
HYBRID_EDGES = 100
ROLLUP_BUCKETS_PER_POINT = 10
HOURLY_EVENTS_PER_POINT = 50
UNBOUNDED_DAYS = 5 * 365  # an open range is priced as five years of buckets
ROWS_PER_POINT = 10
# The `DownloadFilter` fields an index of the events serves with the start time (documents.DownloadEvent).
INDEXED_EVENT_FILTERS = frozenset({"modelNames", "projectNames", "engineers"})
RANGE_FILTERS = frozenset({"since", "until"})
# (field, name) -> the argument's value, variables substituted
Argument = Callable[[FieldNode, str], Any]
# (since, until) -> how many events started in that range (open ends: unbounded); None: counts unknown
Volume = Callable[[datetime | None, datetime | None], int]
UNPRICEABLE = 10**12  # a document too deeply nested to price (graphql-core refuses them first)


def _defined(value: Any) -> Any:
    """`value` with every variable that was not given (Undefined) as None, as execution treats it."""
    if value is Undefined:
        return None
    if isinstance(value, dict):
        return {k: _defined(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_defined(v) for v in value]
    return value


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


class CostCounter:
    """Prices selections under one set of variables; a fragment's price and the field names it selects
    directly are computed once (a fragment spread from inside itself adds nothing: NoFragmentCycles has
    refused such documents before pricing)."""

    def __init__(
        self,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        volume: Volume | None = None,
    ) -> None:
        self.fragments = fragments
        self.variables = dict(variables)  # graphql-core reads a dict
        self.volume = volume
        self.visits = 0  # selections walked: the work done, for tests
        self._prices: dict[str, int] = {}
        self._names: dict[str, frozenset[str]] = {}
        self._pricing: set[str] = set()

    def selection_set(self, selections: SelectionSetNode | None) -> int:
        if selections is None:
            return 0
        total = 0
        for node in selections.selections:
            self.visits += 1
            if isinstance(node, FieldNode):
                total += self.field(node)
            elif isinstance(node, InlineFragmentNode):
                total += self.selection_set(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                total += self.fragment(node.name.value)
        return total

    def fragment(self, name: str) -> int:
        price = self._prices.get(name)
        if price is None:
            definition = self.fragments.get(name)
            if definition is None or name in self._pricing:
                return 0
            self._pricing.add(name)
            price = self._prices[name] = self.selection_set(definition.selection_set)
            self._pricing.discard(name)
        return price

    def field_names(
        self, selections: SelectionSetNode | None, seen: frozenset[str] = frozenset()
    ) -> frozenset[str]:
        """The names of the fields `selections` selects at its own level, through any fragment."""
        if selections is None:
            return frozenset()
        names: set[str] = set()
        for node in selections.selections:
            if isinstance(node, FieldNode):
                names.add(node.name.value)
            elif isinstance(node, InlineFragmentNode):
                names |= self.field_names(node.selection_set, seen)
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
                name = node.name.value
                if name not in self._names:
                    definition = self.fragments.get(name)
                    found = self.field_names(definition.selection_set, seen | {name}) if definition else set()
                    self._names[name] = frozenset(found)
                names |= self._names[name]
        return frozenset(names)

    def argument(self, field: FieldNode, name: str) -> Any:
        for arg in field.arguments or ():
            if arg.name.value == name:
                return _defined(value_from_ast_untyped(arg.value, self.variables))
        return None

    def field(self, field: FieldNode) -> int:
        children = self.selection_set(field.selection_set)
        name = field.name.value
        if name == "downloadStats":
            return stats_price(self.argument, field, children, self.volume)
        if name == "downloadSeries":
            return series_price(self.argument, field, children, self.volume)
        if name == "downloads" and field.selection_set is not None:
            scan = downloads_scan(self.argument, field, self.field_names(field.selection_set))
            if scan is not None:
                return self.page_price(field, children) + read_price(
                    queries.StatsSource.RAW, scan[0], scan[1], False, self.volume
                )
        if name == "nodes" and self.argument(field, "ids") is not None:
            ids = self.argument(field, "ids")
            return 1 + (len(ids) if isinstance(ids, list) else 100) * children
        return self.page_price(field, children)

    def page_price(self, field: FieldNode, children: int) -> int:
        """A field and its children, times the page it asks for (a connection's default page without one)."""
        page = next(
            (
                _int(self.argument(field, a), DEFAULT_PAGE)
                for a in PAGED_ARGS
                if self.argument(field, a) is not None
            ),
            None,
        )
        if (
            page is None
            and field.selection_set is not None
            and self.field_names(field.selection_set) & CONNECTION_FIELDS
        ):
            page = DEFAULT_PAGE
        return 1 + (page or 1) * children


def downloads_scan(
    argument: Argument, field: FieldNode, selected: frozenset[str]
) -> tuple[datetime | None, datetime | None] | None:
    """The range of the raw events a root `downloads` field may read in full (None: it reads about a page).

    A page ordered by start time (either direction, `first` or `last`) and filtered by one indexed field
    (model, project or engineer) and the range reads about a page of events (time windows: db/paging.py);
    any other filter (bytes, statuses, modes, client kinds, versions, two indexed fields at once), another
    order, or a `totalCount` of a filtered query may read every event in the range, so it is priced as a
    raw scan of that range."""
    value = argument(field, "filter")
    order = argument(field, "orderBy")
    if value is not None and not isinstance(value, dict):
        return None, None  # refused by its own validation; priced as the widest scan meanwhile
    given = {key for key, v in (value or {}).items() if v not in (None, [])}
    indexed = given & INDEXED_EVENT_FILTERS
    ordered = isinstance(order, dict) and order.get("field") not in (None, "STARTED_AT")
    counted = "totalCount" in selected and bool(given)
    if not (given - INDEXED_EVENT_FILTERS - RANGE_FILTERS or len(indexed) > 1 or ordered or counted):
        return None
    query = _event_query(value)
    return (query.since, query.until) if query is not None else (None, None)


def _event_query(value: Any) -> queries.EventQuery | None:
    """A `DownloadFilter` argument as the use cases' EventQuery; None when it is not one (the request will
    fail its own validation, and is priced as a raw scan meanwhile)."""
    if value is None:
        return queries.EventQuery()
    if not isinstance(value, dict):
        return None
    try:
        return queries.EventQuery(
            model_names=list(value.get("modelNames") or []),
            versions=list(value.get("versions") or []),
            project_names=list(value.get("projectNames") or []),
            engineers=list(value.get("engineers") or []),
            statuses=[documents.DownloadStatus(s) for s in value.get("statuses") or []],
            modes=[documents.DownloadMode(m) for m in value.get("modes") or []],
            client_kinds=[documents.ClientKind(k) for k in value.get("clientKinds") or []],
            since=_moment(value.get("since")),
            until=_moment(value.get("until")),
            min_bytes=value.get("minBytes"),
        )
    except (ValueError, TypeError):
        return None


def _moment(value: Any) -> datetime | None:
    return None if value is None else _parse_datetime(value)


def _source(query: queries.EventQuery | None, group_by: list[Any], **options: Any) -> queries.StatsSource:
    """Where `downloadStats` will answer this request from (the use case decides, in one place)."""
    if query is None:
        return queries.StatsSource.RAW
    try:
        request = queries.StatsRequest(
            query=query, group_by=[queries.Dimension(d) for d in group_by], **options
        )
        return stats.source_for(request)
    except (DomainError, ValueError, TypeError):
        return queries.StatsSource.RAW


def _days(since: datetime | None, until: datetime | None) -> int:
    if since is None:
        return UNBOUNDED_DAYS
    span = (until or datetime.now(UTC)) - since
    return max(1, math.ceil(span / timedelta(days=1)))


def read_price(
    source: queries.StatsSource,
    since: datetime | None,
    until: datetime | None,
    hourly: bool,
    volume: Volume | None = None,
) -> int:
    """One stats read over [since, until) by its source: a raw scan by the events it reads (by its days when
    their counts are unknown), rollup reads by the buckets they read (hourly ones by the events they hold)
    and the events of their raw edges."""
    days = _days(since, until)
    by_days = min(RAW_SCAN, RAW_SCAN_PER_DAY * days)
    if source is queries.StatsSource.RAW:
        if volume is not None:
            return STATS_BASE + math.ceil(volume(since, until) / RAW_EVENTS_PER_POINT)
        return STATS_BASE + by_days
    buckets = days // ROLLUP_BUCKETS_PER_POINT
    if hourly:
        held = by_days if volume is None else math.ceil(volume(since, until) / HOURLY_EVENTS_PER_POINT)
        buckets = max(days * 24 // ROLLUP_BUCKETS_PER_POINT, held)
    edges = 0
    if source is queries.StatsSource.HYBRID:
        if volume is None:
            edges = HYBRID_EDGES
        else:
            read = sum(volume(a, b) for a, b in hybrid.split(since, until).raw)
            edges = math.ceil(read / RAW_EVENTS_PER_POINT)
    return STATS_BASE + edges + buckets


def _enum(value: Any, kind: Any) -> Any:
    try:
        return kind(value) if value is not None else None
    except ValueError:
        return None


def stats_price(argument: Argument, field: FieldNode, children: int, volume: Volume | None = None) -> int:
    group_by = argument(field, "groupBy")
    group_by = group_by if isinstance(group_by, list) else [group_by]
    query = _event_query(argument(field, "filter"))
    interval = _enum(argument(field, "interval"), queries.Interval)
    source = _source(
        query,
        group_by,
        interval=interval,
        time_zone=argument(field, "timeZone"),
        exact=argument(field, "exact") is True,
    )
    since, until = (query.since, query.until) if query is not None else (None, None)
    limit = _int(argument(field, "limit"), 100)
    rows = limit * max(1, children) // ROWS_PER_POINT
    return read_price(source, since, until, interval is queries.Interval.HOUR, volume) + rows


def series_price(argument: Argument, field: FieldNode, children: int, volume: Volume | None = None) -> int:
    """`downloadSeries` reads three times (series.download_series): the top groups of `by` over the range
    (no interval: from the daily rollups), their buckets, and every event's buckets; each read is priced by
    the source that will answer it."""
    by = argument(field, "by")
    interval = _enum(argument(field, "interval") or "DAY", queries.Interval) or queries.Interval.DAY
    time_zone = argument(field, "timeZone")
    query = _event_query(argument(field, "filter"))
    try:
        since, until = _moment(argument(field, "since")), _moment(argument(field, "until"))
    except (ValueError, TypeError):
        since = until = None
    if query is not None:
        query.since, query.until = since, until
    grouped = _source(query, [by], time_zone=time_zone)
    bucketed = _source(query, [by], interval=interval, time_zone=time_zone)
    everything = _source(query, [], interval=interval, time_zone=time_zone)
    days = _days(since, until)
    hourly = interval is queries.Interval.HOUR
    reads = read_price(grouped, since, until, False, volume)
    reads += sum(read_price(s, since, until, hourly, volume) for s in (bucketed, everything))
    top = min(_int(argument(field, "top"), 10), series.MAX_TOP)
    points = min(days * 24 if hourly else days, series.MAX_POINTS)
    return reads + (top + 1) * points * max(1, children) // (ROWS_PER_POINT * 10)


def operation_cost(
    document: Any,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    volume: Volume | None = None,
) -> int:
    """The cost of the operation `operation_name` (or the only one) of a parsed document; `volume` counts
    the events of a range, to price raw scans by them (None: by their days)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
    counter = CostCounter(fragments, variables or {}, volume)
    try:
        return max((counter.selection_set(o.selection_set) for o in chosen[:1]), default=0)
    except RecursionError:
        return UNPRICEABLE
