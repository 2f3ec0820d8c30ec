"""Operation prices: fragments priced once and like plain selections, and analytics priced by the source
that will answer them (a raw event scan far above a rollup read)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse

from graphql_api.analytics.volume import EventVolume
from graphql_api.client import DOCUMENTS
from graphql_api.config import Settings
from graphql_api.schema.cost import (
    HOURLY_EVENTS_PER_POINT,
    HYBRID_EDGES,
    RAW_EVENTS_PER_POINT,
    RAW_SCAN,
    RAW_SCAN_PER_DAY,
    STATS_BASE,
    CostCounter,
    operation_cost,
)
from tests.schema.test_document_limits import INLINE, NAMED, PLAIN, nested

RAW_READ = STATS_BASE + RAW_SCAN
BUDGET = Settings.model_fields["max_query_cost"].default
UNTIL = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
RANGE = {"since": (UNTIL - timedelta(days=30)).isoformat(), "until": UNTIL.isoformat()}  # whole days


def cost(text: str, variables: dict[str, Any] | None = None, name: str | None = None) -> int:
    return operation_cost(parse(text), name, variables)


def test_named_and_inline_fragments_and_aliases_price_like_the_plain_document() -> None:
    """A document priced the same written plainly, with named fragments, with inline fragments, or with its
    fields aliased."""
    aliased = PLAIN.replace("edges", "e: edges").replace("node {", "n: node {").replace("nodes", "vs: nodes")
    assert cost(PLAIN) == cost(NAMED) == cost(INLINE) == cost(aliased)


def test_a_connection_selected_through_inline_fragments_is_paged() -> None:
    """A connection's edges selected through an inline fragment are priced per row of the page (they
    were priced once: 11 where the plain selection cost 25,661)."""
    plain = "{ models(first: 100) { edges { node { versions { nodes { name tags key } } } } } }"
    inline = (
        "{ models(first: 100) { ... on ModelConnection { edges { node { versions { ... { nodes { name tags key "
        "} } } } } } } }"
    )
    spread = "{ models { ...C } } fragment C on ModelConnection { edges { node { name } } }"
    assert cost(inline) == cost(plain) > BUDGET
    assert cost(spread) == cost("{ models { edges { node { name } } } }") == 1 + 20 * (1 + 1 + 1)


@pytest.mark.parametrize("levels", [6, 8, 12])
def test_pricing_walks_each_fragment_once(levels: int) -> None:
    """Nested spreads are priced by their expansion (10 ** (levels - 1) fields) while the counter walks each
    selection of the text once."""
    document = parse(nested(levels, inline=True))
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    (operation,) = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    counter = CostCounter(fragments, {})
    assert counter.selection_set(operation.selection_set) == 10 ** (levels - 1)
    assert counter.visits == 1 + 2 * 10 * (levels - 1) + 1  # the text's selections (spread, inline, leaf)


STATS = "query($g: [DownloadDimension!]!, $f: DownloadFilter, $e: Boolean! = false, $i: TimeInterval, " \
    "$z: String) { downloadStats(groupBy: $g, filter: $f, exact: $e, interval: $i, timeZone: $z, limit: 10) " \
    "{ totalRows } }"  # fmt: skip


def test_stats_are_priced_by_the_source_that_answers_them() -> None:
    """Grouped by ENGINEER or STATUS, filtered by engineer, in another time zone, or HOUR buckets without an
    end, downloadStats scans raw events and is priced like `exact: true` over the same range (by its days,
    up to a month's price); rollup answers are far cheaper."""
    exact = cost(STATS, {"g": ["MODEL"], "f": RANGE, "e": True})
    assert exact == STATS_BASE + RAW_SCAN + 1
    raw = [
        {"g": ["ENGINEER"], "f": RANGE},
        {"g": ["STATUS"], "f": RANGE},
        {"g": ["MODEL"], "f": {**RANGE, "engineers": ["rita"]}},
        {"g": ["MODEL"], "f": RANGE, "z": "Europe/Paris", "i": "DAY"},
        {"g": ["MODEL"], "f": {"since": (UNTIL - timedelta(days=40)).isoformat()}, "i": "HOUR"},
    ]
    for variables in raw:
        assert cost(STATS, variables) == exact, variables
    rollup = cost(STATS, {"g": ["MODEL"], "f": RANGE})
    off_midnight = (UNTIL - timedelta(days=30, hours=-10, minutes=-30)).isoformat()
    hybrid = cost(STATS, {"g": ["MODEL"], "f": {**RANGE, "since": off_midnight}})
    assert rollup < hybrid < exact / 4
    assert cost(STATS, {"g": ["MODEL"], "f": RANGE, "i": "HOUR"}) > rollup  # 24 times the buckets
    week = {"since": (UNTIL - timedelta(days=7)).isoformat(), "until": UNTIL.isoformat()}
    assert cost(STATS, {"g": ["ENGINEER"], "f": week}) == STATS_BASE + 7 * RAW_SCAN_PER_DAY + 1  # by its days


SERIES = "query($by: DownloadDimension!, $since: DateTime!, $until: DateTime!, $f: DownloadFilter) { " \
    "downloadSeries(by: $by, since: $since, until: $until, filter: $f, top: 10) " \
    "{ total series { key values } } }"  # fmt: skip


def test_series_are_priced_like_the_raw_scans_they_run() -> None:
    """downloadSeries by ENGINEER runs two raw scans (the top engineers, then their buckets): it is priced
    above two exact downloadStats; by MODEL its reads come from rollups and it stays cheap; fifty aliases
    of the ENGINEER series are far over the budget (they were priced 150 in all)."""
    by_engineer = cost(SERIES, {"by": "ENGINEER", **RANGE})
    assert by_engineer > 2 * RAW_READ
    by_model = cost(SERIES, {"by": "MODEL", **RANGE})
    assert by_model < RAW_READ / 2
    filtered = cost(SERIES, {"by": "MODEL", **RANGE, "f": {"statuses": ["FAILED"]}})
    assert filtered > 3 * RAW_READ  # every read scans raw events
    fifty = "query($s: DateTime!, $u: DateTime!) { " + " ".join(
        f"s{i}: downloadSeries(by: ENGINEER, since: $s, until: $u) {{ total }}" for i in range(50)
    ) + " }"  # fmt: skip
    assert cost(fifty, {"s": RANGE["since"], "u": RANGE["until"]}) > 50 * 2 * RAW_READ


@pytest.mark.parametrize("days", [7, 30, 90])
def test_the_shipped_operations_fit_the_default_budget(days: int) -> None:
    """The /ui page's operations (over each of its ranges) and the SDK's fit the default cost budget."""
    ui = (Path(__file__).parents[2] / "graphql_api" / "ui" / "operations.graphql").read_text()
    variables = {"since": (UNTIL - timedelta(days=days)).isoformat(), "until": UNTIL.isoformat(), "name": "m"}
    for name in ("UiModels", "UiOverview", "UiModel"):
        assert cost(ui, variables, name) <= BUDGET, name
    for name, text in DOCUMENTS.items():
        stats = {"groupBy": ["ENGINEER", "MODEL"], "filter": {"since": variables["since"]}, "interval": "DAY"}
        assert cost(text, stats if name == "STATS" else {}) <= BUDGET, name


def test_raw_scans_are_priced_by_the_events_in_their_range() -> None:
    """With the rollups' counts at hand, a raw scan costs a point per RAW_EVENTS_PER_POINT events of its
    range whatever its length (a busy week above a quiet month), a HYBRID answer's edges by their events,
    and a grouped series by the source of each of its reads; rollup reads do not depend on the counts."""
    day = UNTIL - timedelta(days=3)
    counts = EventVolume()
    counts.days = {day: 20_000, UNTIL - timedelta(days=20): 100}

    def priced(text: str, variables: dict[str, Any]) -> int:
        return operation_cost(parse(text), None, variables, counts.estimate)

    month = priced(STATS, {"g": ["ENGINEER"], "f": RANGE})
    assert month == STATS_BASE + 20_100 // RAW_EVENTS_PER_POINT + 1
    quiet = {"since": RANGE["since"], "until": (UNTIL - timedelta(days=10)).isoformat()}
    assert priced(STATS, {"g": ["ENGINEER"], "f": quiet}) == STATS_BASE + 10 + 1
    assert priced(STATS, {"g": ["MODEL"], "f": RANGE, "e": True}) == month  # exact: the same scan
    assert priced(STATS, {"g": ["MODEL"], "f": RANGE}) == cost(STATS, {"g": ["MODEL"], "f": RANGE})
    # a range starting half an hour before the busy day's end: its edge holds 1/48 of that day's events
    edge = {**RANGE, "since": (day + timedelta(hours=23, minutes=30)).isoformat()}
    assert priced(STATS, {"g": ["MODEL"], "f": edge}) == cost(STATS, {"g": ["MODEL"], "f": edge}) - (
        HYBRID_EDGES - math.ceil(20_000 / 48 / RAW_EVENTS_PER_POINT)
    )
    assert priced(SERIES, {"by": "ENGINEER", **RANGE}) > 2 * month
    assert priced(SERIES, {"by": "MODEL", **RANGE}) == cost(SERIES, {"by": "MODEL", **RANGE})


def test_hour_buckets_are_priced_by_the_events_their_hourly_rollups_hold() -> None:
    """With the counts at hand, HOUR buckets over a bounded range (HYBRID or ROLLUP: the hourly rollups) cost a
    point per HOURLY_EVENTS_PER_POINT events of the range, growing with them (a hostile READER's month by the
    hour over 200,000 events cost 315 and took 3 to 6 s), at least a point per 10 hours; DAY buckets over
    the same range do not depend on the counts; a series by the hour prices its two hourly reads so."""
    month = {**RANGE, "until": (UNTIL - timedelta(minutes=30)).isoformat()}  # off the hour: HYBRID
    hours = {"g": ["MODEL", "VERSION"], "f": RANGE, "i": "HOUR"}  # whole days: ROLLUP
    quiet, busy = EventVolume(), EventVolume()
    quiet.days = {UNTIL - timedelta(days=5): 100}
    busy.days = {UNTIL - timedelta(days=d): 200_000 // 30 for d in range(1, 31)}

    def priced(text: str, variables: dict[str, Any], counts: EventVolume) -> int:
        return operation_cost(parse(text), None, variables, counts.estimate)

    floor = priced(STATS, hours, quiet)
    assert floor == STATS_BASE + 30 * 24 // 10 + 1  # a point per 10 hours when they hold few events
    held = busy.estimate(UNTIL - timedelta(days=30), UNTIL)
    assert priced(STATS, hours, busy) == STATS_BASE + math.ceil(held / HOURLY_EVENTS_PER_POINT) + 1
    assert priced(STATS, hours, busy) > 10 * floor
    assert priced(STATS, {**hours, "f": month}, busy) > priced(STATS, hours, busy) - 10  # HYBRID, likewise
    assert priced(STATS, {**hours, "i": "DAY"}, busy) == priced(STATS, {**hours, "i": "DAY"}, quiet)
    series = {"by": "MODEL", "since": RANGE["since"], "until": month["until"], "i": "HOUR"}
    text = SERIES.replace("$f: DownloadFilter", "$f: DownloadFilter, $i: TimeInterval").replace(
        "top: 10", "top: 10, interval: $i"
    )
    more = priced(text, series, busy) - priced(text, series, quiet)
    assert more > 3 * held // (2 * HOURLY_EVENTS_PER_POINT)  # more than one hourly read's events: two


def test_downloads_that_may_read_every_event_are_priced_as_raw_scans() -> None:
    """A `downloads` page by start time on one indexed field costs its page; a filter no index serves, two
    indexed fields, another order, or a filtered `totalCount` (it counts every match) costs a raw scan of its
    range by its events (a hostile READER's `{ downloads(filter: {minBytes: 1}) { totalCount } }` cost 2)."""
    counts = EventVolume()
    counts.days = {UNTIL - timedelta(days=3): 20_000}
    scan = STATS_BASE + 20_000 // RAW_EVENTS_PER_POINT

    def priced(arguments: str, selection: str = "nodes { id }") -> int:
        return operation_cost(
            parse(f"{{ downloads{arguments} {{ {selection} }} }}"), None, {}, counts.estimate
        )

    page = priced("(first: 10)")
    assert page == 1 + 10 * 2
    assert priced('(first: 10, filter: {modelNames: ["m"], since: "2026-01-01T00:00:00Z"})') == page
    # Either direction by start time, first or last, is windowed on the index: its page.
    assert priced("(first: 10, orderBy: {field: STARTED_AT, direction: ASC})") == page
    assert priced('(last: 10, before: "c", filter: {projectNames: ["p"]})') == page
    assert priced("(first: 10)", "totalCount nodes { id }") == 1 + 10 * 3  # unfiltered: summed from rollups
    for heavy in (
        "(first: 10, filter: {minBytes: 1})",
        "(first: 10, filter: {statuses: [FAILED]})",
        '(first: 10, filter: {modelNames: ["m"], engineers: ["e"]})',
        "(first: 10, orderBy: {field: BYTES_SENT, direction: DESC})",
        "(last: 10, orderBy: {field: BYTES_SENT, direction: ASC})",
        "(first: 10, orderBy: {field: DURATION, direction: ASC})",
        "(last: 10, orderBy: {field: DURATION})",
    ):
        assert priced(heavy) == page + scan, heavy
    assert priced('(filter: {modelNames: ["m"]})', "totalCount") == 2 + scan  # the field and its count
    assert priced("(filter: {minBytes: 1})", "totalCount") == 2 + scan
    recent = f'(first: 10, filter: {{minBytes: 1, since: "{(UNTIL - timedelta(days=1)).isoformat()}"}})'
    assert priced(recent) == page + STATS_BASE  # the busy day is outside its range


def test_event_volume_counts_a_partial_day_pro_rata() -> None:
    """The estimate of a range's events: whole days as counted, a partial day in proportion (rounded up),
    open ends take every day on their side."""
    counts = EventVolume()
    counts.days = {UNTIL: 240, UNTIL - timedelta(days=1): 24}
    assert counts.estimate(None, None) == 264
    assert counts.estimate(UNTIL - timedelta(hours=1), UNTIL + timedelta(hours=1)) == 1 + 10
    assert counts.estimate(UNTIL + timedelta(days=1), None) == 0
