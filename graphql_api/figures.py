"""The download figures and dimensions, declared once: what each is, how events make it, how partial values
merge, how a row is finished from raw events or from rollups, and the names it goes by on its way out.

Plain data (a leaf module: it imports only `documents`); each consumer interprets it:

- raw events (`db/events/raw_stats.py`): `PARTIALS` are the accumulators of the first grouping (per group and
  engineer) and say how two partial values merge (pieces of a scan, then the engineers of a group); each
  figure's `raw` finishes a row from the merged partials (in Python, and as the single pipeline's stage);
- rollups (`analytics/stats.py`, `db/rollups/`): each figure's `rollup` says which bucket fields
  (`RollupDelta` attributes) make it and how; `None` would mean the rollups cannot answer it;
- rows: `StatsRow` (`analytics/stats.py`) and `DownloadStatsRow` (`schema/stats.py`) hold `DIMENSIONS`
  then `period_start` then `FIGURES` under these names, with these descriptions; `StatsMetric` (orders)
  and `SeriesMetric` are the figures with a `metric` / `series` flag.

What cannot be derived without losing static types (the Python and Strawberry enums, the dataclass fields,
the rollup documents) is checked against this module when its own module is imported (`require`), so a
figure added here and forgotten elsewhere stops the server at start, naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .documents import ClientKind, DownloadMode, DownloadStatus

Condition = dict[str, Any]


class FigureMismatch(RuntimeError):
    """A module disagrees with the declaration of figures and dimensions."""


def require(ok: bool, what: str) -> None:
    """Fails loudly (at import, so at start) when a module disagrees with this declaration."""
    if not ok:
        raise FigureMismatch(f"graphql_api.figures: {what}")


def require_names(have: list[str], want: list[str], where: str) -> None:
    """Fails loudly unless `where` holds exactly `want`, in order, naming what is missing or extra."""
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    detail = f"lacks {missing}" if missing else f"has undeclared {extra}" if extra else "is out of order"
    require(have == want, f"{where} {detail}; it must be {want}")


class Merge(StrEnum):
    """How two partial values of one group combine."""

    SUM = "SUM"  # added
    MAX = "MAX"  # the larger; None (no value) is lowest
    CONCAT = "CONCAT"  # values listed one after the other (for percentiles)
    UNION = "UNION"  # a set of distinct values


@dataclass(frozen=True)
class Partial:
    """What a raw scan keeps of the events of one (group, engineer): `accumulator` is its `$group`
    accumulator over a piece's events; `merge` how two of them (two pieces) combine."""

    name: str
    accumulator: Condition
    merge: Merge


def _count_if(condition: Condition) -> Condition:
    return {"$sum": {"$cond": [condition, 1, 0]}}


_IS_DURATION = {"$isNumber": "$duration_seconds"}
# Bytes per second of a transfer with a duration and bytes; null (ignored by $percentile) for any other.
THROUGHPUT: Condition = {
    "$cond": [
        {"$and": [{"$gt": ["$duration_seconds", 0]}, {"$gt": ["$bytes_sent", 0]}]},
        {"$divide": ["$bytes_sent", "$duration_seconds"]},
        None,
    ]
}

PARTIALS: tuple[Partial, ...] = (
    Partial("downloads", {"$sum": 1}, Merge.SUM),
    # Completed downloads, not COMPLETED transfers: see DownloadEvent.completes.
    Partial("completed", _count_if({"$eq": ["$completes", True]}), Merge.SUM),
    Partial("aborted", _count_if({"$eq": ["$status", DownloadStatus.ABORTED.value]}), Merge.SUM),
    Partial("failed", _count_if({"$eq": ["$status", DownloadStatus.FAILED.value]}), Merge.SUM),
    Partial("verified", _count_if({"$eq": ["$sha256_matches", True]}), Merge.SUM),
    Partial("mismatched", _count_if({"$eq": ["$sha256_matches", False]}), Merge.SUM),
    Partial("total_bytes", {"$sum": "$bytes_sent"}, Merge.SUM),
    Partial("duration_sum", {"$sum": {"$cond": [_IS_DURATION, "$duration_seconds", 0]}}, Merge.SUM),
    Partial("duration_count", _count_if(_IS_DURATION), Merge.SUM),
    Partial("max_duration", {"$max": "$duration_seconds"}, Merge.MAX),
    Partial("durations", {"$push": "$duration_seconds"}, Merge.CONCAT),
    Partial("throughputs", {"$push": THROUGHPUT}, Merge.CONCAT),
    # The engineer's distinct versions: a group's distinct (engineer, version) pairs add up from them.
    Partial("versions", {"$addToSet": {"n": "$model_name", "v": "$model_version"}}, Merge.UNION),
)
PARTIAL = {p.name: p for p in PARTIALS}


class Finish(StrEnum):
    """How a row's figure is made from a group's merged values (raw partials or rollup bucket fields)."""

    VALUE = "VALUE"  # the value itself (a sum or a maximum)
    MEAN = "MEAN"  # of[0] / of[1], None when of[1] is 0
    PERCENTILE = "PERCENTILE"  # raw: nearest rank of the listed numbers; rollups: read off a histogram
    GROUPS = "GROUPS"  # raw: how many per-engineer partials the group has
    SIZE = "SIZE"  # raw: the summed sizes of a UNION partial over the group's engineers
    BITS = "BITS"  # rollups: the set bits of a bitmap
    PAIR_BITS = "PAIR_BITS"  # rollups: the set bits of every version's bitmap, summed


@dataclass(frozen=True)
class Made:
    """One finishing rule: its kind, the values it reads (partials or bucket fields) and its parameters."""

    finish: Finish
    of: tuple[str, ...]
    p: float = 0.0
    minimum: float | None = None  # a histogram's lowest bucket (None: durations')


def _value(name: str) -> Made:
    return Made(Finish.VALUE, (name,))


@dataclass(frozen=True)
class Figure:
    """One figure of a `downloadStats` row.

    `name` is its `StatsRow` attribute (and its key in a raw row), `field` its `DownloadStatsRow` field;
    `integral` figures are counts (0 by default), the others floats (None without data). `metric` is its
    `StatsMetric` (rows can be ordered by it), `series` says `downloadSeries` may plot it (additive, so an
    `other` series is exact). `raw` finishes it from raw partials; `rollup` from the rollups' buckets, with
    `exact` False where a histogram only approximates it."""

    name: str
    field: str
    description: str
    raw: Made
    rollup: Made | None
    integral: bool = True
    metric: str | None = None
    series: bool = False
    exact: bool = True

    @property
    def merged(self) -> bool:
        """Whether the rollups give it only from merged histograms or bitmaps: a page ordered by it needs
        every group (see rollups_db.page_in_db)."""
        return self.rollup is not None and self.rollup.finish not in (Finish.VALUE, Finish.MEAN)


def _sum(name: str, description: str, bucket: str | None = None, *, ordered: bool = False) -> Figure:
    """A count summed as it is (from the rollup bucket field `bucket`, else `name`); an `ordered` one is a
    metric of its name that series may plot."""
    made = _value(name)
    rollup = _value(bucket) if bucket else made
    metric = name.upper() if ordered else None
    return Figure(name, name, description, made, rollup, metric=metric, series=ordered)


def _percentile(what: str, p: float, field: str, description: str, *, ordered: bool = False) -> Figure:
    """The `p` percentile of durations or throughputs: nearest rank of the raw values, else read off the
    rollups' histogram (within about 5%); an `ordered` one is a metric of its name."""
    name = f"p{round(p * 100)}_{what}"
    minimum = None if what == "duration" else 0.001  # throughputs' histogram starts lower
    raw = Made(Finish.PERCENTILE, (f"{what}s",), p)
    rollup = Made(Finish.PERCENTILE, (f"{what}_hist",), p, minimum=minimum)
    metric = name.upper() if ordered else None
    return Figure(name, field, description, raw, rollup, integral=False, metric=metric, exact=False)


FIGURES: tuple[Figure, ...] = (
    _sum("downloads", "Download events (any status) started in the group.", ordered=True),
    _sum("completed", "Completed downloads.", ordered=True),
    _sum("aborted", "Aborted downloads.", ordered=True),
    _sum("failed", "Failed downloads.", ordered=True),
    _sum("verified", "Downloads whose client reported the SHA-256 matched (reportDownloadVerification)."),
    _sum("mismatched", "Downloads whose client reported a SHA-256 mismatch."),
    _sum("total_bytes", "Bytes actually sent.", "bytes_sent", ordered=True),
    Figure(
        "avg_duration", "avg_duration_seconds", "Mean duration of finished downloads.",
        Made(Finish.MEAN, ("duration_sum", "duration_count")),
        Made(Finish.MEAN, ("duration_sum", "duration_count")),
        integral=False, metric="AVG_DURATION",
    ),
    _percentile("duration", 0.5, "p50_duration_seconds", "Median duration.", ordered=True),
    _percentile("duration", 0.95, "p95_duration_seconds", "95th percentile duration.", ordered=True),
    _percentile(
        "duration", 0.99, "p99_duration_seconds", "99th percentile duration: the slow tail p95 hides.",
        ordered=True,
    ),
    Figure(
        "max_duration", "max_duration_seconds", "Longest duration.",
        _value("max_duration"), _value("duration_max"), integral=False, metric="MAX_DURATION",
    ),
    _percentile(
        "throughput", 0.5, "p50_throughput_bytes_per_second",
        "Median throughput (bytes sent / duration) of transfers that sent bytes over a duration.",
    ),
    _percentile(
        "throughput", 0.95, "p95_throughput_bytes_per_second",
        "95th percentile throughput (bytes per second); rollups: within about 5%, like durations.",
    ),
    Figure(
        "unique_engineers", "unique_engineers", "Distinct engineers who downloaded.",
        Made(Finish.GROUPS, ()), Made(Finish.BITS, ("engineer_bits",)), metric="UNIQUE_ENGINEERS",
    ),
    Figure(
        "distinct_downloads", "distinct_downloads",
        "Distinct (engineer, model version) pairs among the group's download events: retries and "
        "re-downloads of one version by one engineer count once per row (per period with `interval`).",
        Made(Finish.SIZE, ("versions",)), Made(Finish.PAIR_BITS, ("pair_bits",)),
        metric="DISTINCT_DOWNLOADS",
    ),
)  # fmt: skip
FIGURE = {f.name: f for f in FIGURES}
# A row's order key besides the figures: the bucket's start (needs an interval).
PERIOD_START = "PERIOD_START"
# StatsMetric name → the StatsRow attribute (and raw row key) holding it.
METRIC_NAMES: dict[str, str] = {
    PERIOD_START: "period_start",
    **{f.metric: f.name for f in FIGURES if f.metric is not None},
}
SERIES_NAMES: tuple[str, ...] = tuple(f.metric for f in FIGURES if f.series and f.metric is not None)
# Whether the rollups can make every figure of a row (else every request is answered from raw events).
ROLLUPS_ANSWER = all(f.rollup is not None for f in FIGURES)


class FilterForm(StrEnum):
    """How a dimension's `EventQuery` filter matches."""

    ANY_OF = "ANY_OF"  # the event's value is one of the listed ones
    # The same, where None in the list also matches events without a value (a missing or null field).
    ANY_OF_OR_NONE = "ANY_OF_OR_NONE"


@dataclass(frozen=True)
class Dimension:
    """One thing `downloadStats` can group by: its `Dimension` name, the `StatsRow` attribute holding a
    group's value (`row`), its `DownloadStatsRow` field, the event field it reads, the rollup bucket key
    (None: raw events only), the `EventQuery` field that filters on it (None: it cannot be filtered, so it
    cannot split a series), how that filter matches, and the enum a stored value is read back as."""

    name: str
    row: str
    field: str
    event: str
    rollup: str | None
    filter: str | None
    kind: type[StrEnum] | None = None
    form: FilterForm = FilterForm.ANY_OF


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("MODEL", "model_name", "model_name", "model_name", "model_name", "model_names"),
    Dimension("VERSION", "model_version", "version", "model_version", "model_version", "versions"),
    Dimension("PROJECT", "project_name", "project_name", "project_name", "project_name", "project_names"),
    Dimension("ENGINEER", "engineer", "engineer", "engineer", None, "engineers"),
    Dimension("MODE", "mode", "mode", "mode", "mode", "modes", DownloadMode),
    Dimension("STATUS", "status", "status", "status", None, "statuses", DownloadStatus),
    Dimension("CLIENT_KIND", "client_kind", "client_kind", "client_kind", "client_kind", "client_kinds",
              ClientKind),
    Dimension("CLIENT_VERSION", "client_version", "client_version", "client_version", None, None),
    # The alias a download asked for (null: asked by number or for the latest); raw events only.
    Dimension("ALIAS", "requested_alias", "requested_alias", "requested_alias", None, "aliases",
              form=FilterForm.ANY_OF_OR_NONE),
)  # fmt: skip
DIMENSION = {d.name: d for d in DIMENSIONS}


def _check() -> None:
    for figure in FIGURES:
        for name in figure.raw.of:
            require(name in PARTIAL, f"figure {figure.name} reads an undeclared partial {name}")
    names = [f.name for f in FIGURES] + [d.row for d in DIMENSIONS]
    require(len(set(names)) == len(names), "a figure or dimension name is declared twice")


_check()
