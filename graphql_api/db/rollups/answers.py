"""What the buckets can answer of a stats request, and its groups (merged in the app or by the database)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ... import figures
from ...figures import Finish
from ...queries import Dimension, EventQuery, Interval, StatsMetric, StatsRequest, truncate
from ..common import Condition, Translator, any_of, ordered_page, read_page, translate, trunc
from .buckets import COARSER, COUNTS, DAY, FINE_KEYS, Grain, RollupDelta
from .pending import Pending, as_stored, keep_query, split


def _bound(grain: Grain, op: str) -> Translator:
    # Buckets hold whole days (hours): only a bucket edge is a bound they can apply exactly.
    return lambda moment: {grain.field: {op: moment}} if grain.start_of(moment) == moment else None


def filters(grain: Grain) -> Mapping[str, Translator]:
    """What the buckets can filter on; any other set field of the query makes them unable to answer."""
    keyed = {d.filter: d.rollup for d in figures.DIMENSIONS if d.filter and d.rollup}
    # Only ANY_OF filters translate: a bucket key always has a value (checked by _check).
    return {
        **{name: any_of(key) for name, key in keyed.items() if key in grain.keys},
        "since": _bound(grain, "$gte"),
        "until": _bound(grain, "$lt"),
    }


# Dimension → the bucket key it groups by, for the dimensions the buckets keep (figures.DIMENSIONS).
DIMENSIONS: dict[Dimension, str] = {Dimension(d.name): d.rollup for d in figures.DIMENSIONS if d.rollup}


def rollup_filter(q: EventQuery, grain: Grain = DAY) -> Condition | None:
    """The bucket filter for `q`, or None when the buckets cannot express one of its conditions."""
    q.validate()
    return translate(q, filters(grain))


def bucket_filter(req: StatsRequest, grain: Grain = DAY) -> Condition | None:
    """The filter of the buckets of `grain` that answer `req` exactly, or None when they cannot: when a
    condition has no bucket equivalent, a dimension is not kept in them, the answer must be exact, or the
    interval cannot be cut from them (HOUR from days, or a time zone other than UTC)."""
    match = rollup_filter(req.query, grain)
    # HOUR buckets come from the hourly rollups only (a day bucket cannot be split into hours).
    hour_in_days = req.interval is Interval.HOUR and grain.name != "hour"
    unsupported_interval = hour_in_days or req.tz not in ("UTC", "Etc/UTC")
    unkept = any(d not in DIMENSIONS or DIMENSIONS[d] not in grain.keys for d in req.group_by)
    if match is None or req.exact or unsupported_interval or unkept:
        return None
    return match


def narrowest(req: StatsRequest, grain: Grain = DAY) -> tuple[Grain, Condition] | None:
    """The buckets of `grain`'s length that answer `req` in the fewest documents (the whole-model ones when
    `req` needs no version or mode, and without client kinds when it needs none either), with their filter;
    None when no buckets of that length can."""
    for candidate in COARSER.get(grain, (grain,)):
        match = bucket_filter(req, candidate)
        if match is not None:
            return candidate, match
    return None


Group = tuple[dict[str, Any], RollupDelta]


def add_to(groups: dict[tuple[Any, ...], Group], key: dict[str, Any], delta: RollupDelta) -> None:
    """Adds `delta` to the group of `key` (the first delta of a group becomes its total). Groups are told
    apart by the key's values: every reader builds its keys in the same order (the dimensions as asked,
    then `period`)."""
    found = groups.get(tuple(key.values()))
    if found is None:
        groups[tuple(key.values())] = (key, delta)
    else:
        found[1].add(delta)


async def grouped(req: StatsRequest, grain: Grain = DAY, pending: Pending = ()) -> list[Group] | None:
    """Each group's key (dimension → value, and `period`) and what its buckets add up to, for `req` over
    buckets of `grain`'s length (the whole-model ones when they answer); None when no such buckets can.

    The buckets are read with a plain find and grouped here: on SecantusDB the `$group` that pushed each
    bucket's histogram and bitmap cost more than the find itself (30 days by model, 1,450 daily buckets:
    335 ms grouped, 212 ms found; 1,042 hourly buckets into 50 rows: 207 ms, 124 ms).

    `pending`: stages the roller may not have folded yet, added to their buckets (see `split`)."""
    found = narrowest(req, grain)
    if found is None:
        return None
    grain, match = found
    fields = [(d.value, DIMENSIONS[d]) for d in req.group_by]
    groups: dict[tuple[Any, ...], Group] = {}
    periods: dict[datetime, datetime] = {}  # bucket start → its period (many buckets share a start)

    def add(doc: Mapping[str, Any], delta: RollupDelta) -> None:
        key = {name: doc.get(source) for name, source in fields}
        if req.interval:
            start = doc[grain.field]
            if start not in periods:
                periods[start] = truncate(start.astimezone(UTC), req.interval)
            key["period"] = periods[start]
        add_to(groups, key, delta)

    leave_out, adjusted = await split(grain, pending, keep_query(req.query))
    async for doc in grain.collection.find({**match, **leave_out}, batch_size=10_000):
        add(doc, RollupDelta.of_bucket(doc))
    for doc, delta in adjusted:
        add(doc, delta)
    return list(groups.values())


# Bucket fields a page grouped in the database sums (the counts and what means divide) and takes the
# maximum of; every other field a figure reads is a histogram or a bitmap, merged in the app.
_SUMMED = (*COUNTS, "duration_sum")
_MAXIMA = ("duration_max",)
# Metrics only merged bitmaps and histograms give: a page ordered by one needs every group (`grouped`).
MERGED_METRICS = tuple(StatsMetric(f.metric) for f in figures.FIGURES if f.merged and f.metric is not None)


def _sort_field(metric: StatsMetric) -> Condition | None:
    """The figure a page is ordered by, from the grouped bucket fields, under its row name (None: it is
    a grouped field already)."""
    figure = next(f for f in figures.FIGURES if f.metric == metric.value)
    made = figure.rollup
    assert made is not None and not figure.merged
    if made.finish is Finish.MEAN:
        total, count = (f"${name}" for name in made.of)
        return {figure.name: {"$cond": [{"$gt": [count, 0]}, {"$divide": [total, count]}, None]}}
    return None if made.of[0] == figure.name else {figure.name: f"${made.of[0]}"}


def _check() -> None:
    """The rollups against figures.FIGURES and figures.DIMENSIONS (at import: at start)."""
    fields = {f.name for f in dataclasses.fields(RollupDelta)}
    for figure in figures.FIGURES:
        made = figure.rollup
        if made is None:
            continue
        for name in made.of:
            figures.require(name in fields, f"figure {figure.name} reads {name}, which RollupDelta lacks")
        if not figure.merged:
            kept = _SUMMED if made.finish is Finish.MEAN or made.of[0] not in _MAXIMA else _MAXIMA
            figures.require(all(n in kept for n in made.of), f"figure {figure.name}: a page cannot group it")
    for d in figures.DIMENSIONS:
        figures.require(d.rollup is None or d.rollup in FINE_KEYS, f"dimension {d.name}: no bucket key")
        figures.require(
            d.rollup is None or d.form is figures.FilterForm.ANY_OF,
            f"dimension {d.name}: a bucket key has a value",
        )
    figures.require(all(f in fields for f in _SUMMED + _MAXIMA), "RollupDelta lacks a summed field")


_check()


async def page_in_db(
    req: StatsRequest, grain: Grain = DAY, pending: Pending = ()
) -> tuple[list[Group], int] | None:
    """One page of groups (as `grouped` gives them, in the page's order) grouped, ordered and cut by the
    database, and the number of all groups; None when the buckets cannot answer or the order needs merged
    figures (MERGED_METRICS). The buckets `pending` stages fall in are handed to the database as they would
    be with those stages folded (`$documents`, beside the other buckets by `$unionWith`), so the page's
    order counts them.

    For long ranges: `grouped` ships every bucket of the range to the app, this only the page's rows (with
    their buckets' histograms and bitmaps). On SecantusDB the find is faster for the ranges measured; on
    MongoDB a top-10 over all time is a few rows instead of every bucket ever written."""
    found = narrowest(req, grain)
    if found is None or req.sort_metric in MERGED_METRICS:
        return None
    grain, match = found
    leave_out, adjusted = await split(grain, pending, keep_query(req.query))
    pipeline = _grouping(req, grain)
    page = ordered_page(req, period="_id.period")
    if adjusted:
        head = [
            {"$documents": await as_stored(grain, adjusted)},
            {"$unionWith": {"coll": grain.collection.name, "pipeline": [{"$match": {**match, **leave_out}}]}},
        ]
        cursor = await grain.collection.database.aggregate([*head, *pipeline, *page])
    else:
        cursor = await grain.collection.aggregate([{"$match": match}, *pipeline, *page])
    docs, total = await read_page(cursor)
    return _groups_of(docs), total


def _grouping(req: StatsRequest, grain: Grain) -> list[Condition]:
    """The stages of `page_in_db` that group its buckets into rows (sums, maxima, each bucket's histograms
    and bitmaps) and add the figure the page is ordered by."""
    key: Condition = {d.value: f"${DIMENSIONS[d]}" for d in req.group_by}
    if req.interval:
        same = req.interval.value.lower() == grain.name  # a bucket's start is then its period
        key["period"] = f"${grain.field}" if same else trunc(f"${grain.field}", req.interval, "UTC")
    pipeline: list[Condition] = [
        {
            "$group": {
                "_id": key,
                **{name: {"$sum": f"${name}"} for name in _SUMMED},
                **{name: {"$max": f"${name}"} for name in _MAXIMA},
                "engineer_words": {"$push": "$engineer_bits"},
                "hists": {"$push": "$duration_hist"},
                "throughputs": {"$push": "$throughput_hist"},
                # A whole-model bucket's `pair_bits`, or a per-version bucket's version (see pairs_of).
                "pairs": {
                    "$push": {
                        "model_name": "$model_name",
                        "model_version": "$model_version",
                        "pair_bits": "$pair_bits",
                    }
                },
            }
        },
    ]
    sort_field = None if req.sort_metric is StatsMetric.PERIOD_START else _sort_field(req.sort_metric)
    if sort_field is not None:
        pipeline.append({"$addFields": sort_field})
    return pipeline


def _groups_of(docs: list[dict[str, Any]]) -> list[Group]:
    """The rows of a page grouped by the database as `grouped` gives them."""
    groups = []
    for doc in docs:
        # The row's sums and maxima (under the bucket fields' names), then each bucket's histogram and bitmap.
        delta = RollupDelta.of_bucket(doc)
        parts = zip(doc["hists"], doc["throughputs"], doc["engineer_words"], doc["pairs"], strict=True)
        for hist, throughputs, words, pairs in parts:
            bucket = {"duration_hist": hist, "throughput_hist": throughputs, "engineer_bits": words, **pairs}
            delta.add(RollupDelta.of_bucket(bucket))
        groups.append((dict(doc["_id"] or {}), delta))
    return groups
