"""Owner of the rollup collections: bucket increments, bulk writes, and the stats they can answer exactly.

A bucket holds one UTC day (or hour) of one model version, project and mode, or of one whole model (all its
versions and modes: `*_by_model`). SecantusDB 0.7 lost increments under
concurrent upserts, so a bucket is created by a plain insert (a lost race is a DuplicateKeyError) and every
writer then only updates it; the bulk path does the same in two bulk calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beanie import Document
from bson.int64 import Int64
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from .. import figures
from ..documents import DailyModelRollup, DownloadEvent, DownloadRollup, HourlyModelRollup, HourlyRollup
from ..figures import Finish
from ..queries import Dimension, EventQuery, Interval, StatsMetric, StatsRequest, day_of, hour_of, truncate
from . import events as events_db
from .common import DUPLICATE_KEY, Condition, Translator, any_of, ordered_page, read_page, translate, trunc
from .engineers import bitmap_from, bitmap_of, numbers_for, words_of

# A bucket's whole-number figures, all summed.
COUNTS = (
    "downloads", "completed", "aborted", "failed", "bytes_sent", "duration_count", "verified", "mismatched",
)  # fmt: skip


# The fields that make a bucket's key besides its start: every version and mode apart, or a model whole.
FINE_KEYS = ("model_name", "model_version", "project_name", "mode", "client_kind")
MODEL_KEYS = ("model_name", "project_name", "client_kind")


@dataclass(frozen=True)
class Grain:
    """A kind of bucket: its collection, its length (the field holding the bucket's start, and how to find
    the start), and the fields that key it."""

    name: str
    document: type[Document]
    field: str
    key_format: str
    start_of: Callable[[datetime], datetime]
    keys: tuple[str, ...] = FINE_KEYS

    @property
    def collection(self) -> Any:
        return self.document.get_pymongo_collection()

    @property
    def keeps_pairs(self) -> bool:
        """Whether its buckets store `pair_bits` (engineers per version): the whole-model ones do; a
        per-version bucket's pairs are its engineers with its version, so it stores nothing more."""
        return "model_version" not in self.keys


DAY = Grain("day", DownloadRollup, "day", "%Y-%m-%d", day_of)
HOUR = Grain("hour", HourlyRollup, "hour", "%Y-%m-%dT%H", hour_of)
DAY_BY_MODEL = Grain("day", DailyModelRollup, "day", "%Y-%m-%d", day_of, MODEL_KEYS)
HOUR_BY_MODEL = Grain("hour", HourlyModelRollup, "hour", "%Y-%m-%dT%H", hour_of, MODEL_KEYS)
GRAINS = (DAY, HOUR, DAY_BY_MODEL, HOUR_BY_MODEL)
# Each fine grain's whole-model twin: the same figures in fewer buckets, for queries that need no version
# or mode (SecantusDB's cost of a read grows with the number of buckets it reads).
BY_MODEL = {DAY: DAY_BY_MODEL, HOUR: HOUR_BY_MODEL}


@dataclass(frozen=True)
class RollupBucket:
    start: datetime
    model_name: str
    model_version: int | None
    project_name: str
    mode: str | None
    grain: Grain = DAY
    client_kind: str = "UNKNOWN"

    @classmethod
    def of(cls, event: DownloadEvent, grain: Grain = DAY) -> RollupBucket:
        fields = {name: getattr(event, name, None) for name in ("mode", "client_kind", "started_at")}
        fields.update(model_name=event.model_name, model_version=event.model_version)
        return cls.of_doc({**fields, "project_name": event.project_name}, grain)

    @classmethod
    def of_doc(cls, doc: Mapping[str, Any], grain: Grain = DAY) -> RollupBucket:
        """The bucket of `grain` a stored event (or a DownloadEvent's fields) falls in."""
        mode = doc["mode"]
        mode = mode.value if hasattr(mode, "value") else str(mode)
        kind = doc.get("client_kind") or "UNKNOWN"
        kind = kind.value if hasattr(kind, "value") else str(kind)
        start = grain.start_of(doc["started_at"])
        fine = grain.keys == FINE_KEYS
        version = doc["model_version"] if fine else None
        name, project = doc["model_name"], doc["project_name"]
        return cls(start, name, version, project, mode if fine else None, grain, kind)

    @property
    def key(self) -> str:
        parts = [self.start.strftime(self.grain.key_format)]
        return "|".join([*parts, *(str(getattr(self, name)) for name in self.grain.keys)])

    def empty_document(self) -> dict[str, Any]:
        return {
            "_id": self.key,
            self.grain.field: self.start,
            **{name: getattr(self, name) for name in self.grain.keys},
            **dict.fromkeys(COUNTS, 0),
            "duration_sum": 0.0,
            "duration_max": None,
            "last_completed_at": None,
            "duration_hist": {},
            "throughput_hist": {},
            "engineer_bits": {},
            **({"pair_bits": {}} if self.grain.keeps_pairs else {}),
        }

    def document(self, delta: RollupDelta) -> dict[str, Any]:
        """The bucket as stored when it holds exactly `delta` (whose engineers are a bitmap)."""
        return {**self.empty_document(), **stored_figures(delta, self.grain.keeps_pairs)}


def stored_figures(delta: RollupDelta, keeps_pairs: bool) -> dict[str, Any]:
    """A bucket's figures as stored when it holds exactly `delta` (whose engineers are a bitmap)."""
    return {
        **{name: getattr(delta, name) for name in COUNTS},
        "duration_sum": delta.duration_sum,
        "duration_max": delta.duration_max,
        "last_completed_at": delta.last_completed_at,
        "duration_hist": {str(index): count for index, count in delta.duration_hist.items()},
        "throughput_hist": {str(index): count for index, count in delta.throughput_hist.items()},
        "engineer_bits": words_of(delta.engineer_bits),
        **({"pair_bits": pair_words(delta.pair_bits)} if keeps_pairs else {}),
    }


# A model version: (model name, version number).
Version = tuple[str, int]


def pair_words(pairs: Mapping[Version, int]) -> dict[str, dict[str, Int64]]:
    """One model's engineers per version as stored: version number (a string) → its bitmap's words."""
    return {str(version): words_of(bits) for (_, version), bits in pairs.items() if bits}


def pairs_of(doc: Mapping[str, Any]) -> dict[Version, int]:
    """A stored bucket's (engineer, model version) pairs as model version → engineers' bitmap: its
    `pair_bits`, or, for a per-version bucket (which has no `pair_bits`), its engineers with its version."""
    name = doc.get("model_name")
    if name is None:
        return {}
    stored = doc.get("pair_bits")
    if stored is not None:
        return {(name, int(version)): bitmap_of(words) for version, words in stored.items()}
    version = doc.get("model_version")
    if version is None:
        return {}
    return {(name, int(version)): bitmap_of(doc.get("engineer_bits") or {})}


@dataclass
class RollupDelta:
    """What some events add to one bucket: counts, bytes, durations (with their histogram), engineers (by
    name from events, as a bitmap of their numbers from stored buckets; see db/engineers.py)."""

    downloads: int = 0
    completed: int = 0
    aborted: int = 0
    failed: int = 0
    bytes_sent: int = 0
    duration_count: int = 0
    # Downloads whose client reported the SHA-256 matched / did not (counted in the download's start bucket).
    verified: int = 0
    mismatched: int = 0
    duration_sum: float = 0.0
    # Histogram bucket index (see analytics.histograms) → durations in it.
    duration_hist: dict[int, int] = field(default_factory=dict)
    # The same for throughputs (bytes per second) of transfers with a duration and bytes.
    throughput_hist: dict[int, int] = field(default_factory=dict)
    duration_max: float | None = None
    last_completed_at: datetime | None = None
    engineers: set[str] = field(default_factory=set)
    engineer_bits: int = 0
    # Distinct (engineer, model version) pairs: (engineer, name, version) from events, as model version →
    # engineers' bitmap from stored buckets.
    pairs: set[tuple[str, str, int]] = field(default_factory=set)
    pair_bits: dict[Version, int] = field(default_factory=dict)

    @classmethod
    def of_bucket(cls, doc: Mapping[str, Any]) -> RollupDelta:
        """What a stored bucket holds, as a delta to add to others."""
        delta = cls(
            duration_sum=doc.get("duration_sum") or 0.0,
            duration_hist={int(index): count for index, count in (doc.get("duration_hist") or {}).items()},
            throughput_hist={int(i): count for i, count in (doc.get("throughput_hist") or {}).items()},
            duration_max=doc.get("duration_max"),
            last_completed_at=doc.get("last_completed_at"),
            engineer_bits=bitmap_of(doc.get("engineer_bits") or {}),
            pair_bits=pairs_of(doc),
        )
        for name in COUNTS:
            setattr(delta, name, doc.get(name) or 0)
        return delta

    def add(self, other: RollupDelta) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.duration_sum += other.duration_sum
        for index, count in other.duration_hist.items():
            self.duration_hist[index] = self.duration_hist.get(index, 0) + count
        for index, count in other.throughput_hist.items():
            self.throughput_hist[index] = self.throughput_hist.get(index, 0) + count
        self.duration_max = _max(self.duration_max, other.duration_max)
        self.last_completed_at = _max(self.last_completed_at, other.last_completed_at)
        self.engineers |= other.engineers
        self.engineer_bits |= other.engineer_bits
        self.pairs |= other.pairs
        for version, bits in other.pair_bits.items():
            self.pair_bits[version] = self.pair_bits.get(version, 0) | bits

    def bitmap(self, numbers: Mapping[str, int]) -> int:
        """Every engineer of the delta as a bitmap, its names numbered by `numbers`."""
        return self.engineer_bits | bitmap_from(numbers[name] for name in self.engineers)

    def pair_bitmaps(self, numbers: Mapping[str, int]) -> dict[Version, int]:
        """Every (engineer, model version) pair of the delta as model version → engineers' bitmap, its
        names numbered by `numbers`."""
        found = dict(self.pair_bits)
        for engineer, name, version in self.pairs:
            found[name, version] = found.get((name, version), 0) | (1 << numbers[engineer])
        return found

    def to_update(self, numbers: Mapping[str, int] | None = None, pairs: bool = False) -> Condition:
        """The bucket update; `numbers` numbers the delta's engineer names (needed when it has any); `pairs`
        for a bucket that keeps `pair_bits` (Grain.keeps_pairs)."""
        inc: dict[str, Any] = {name: getattr(self, name) for name in COUNTS if getattr(self, name)}
        if self.duration_count:
            inc["duration_sum"] = self.duration_sum
        inc.update({f"duration_hist.{i}": n for i, n in self.duration_hist.items()})
        inc.update({f"throughput_hist.{i}": n for i, n in self.throughput_hist.items()})
        update: Condition = {"$inc": inc} if inc else {}
        maxima = {"duration_max": self.duration_max, "last_completed_at": self.last_completed_at}
        if any(v is not None for v in maxima.values()):
            update["$max"] = {k: v for k, v in maxima.items() if v is not None}
        words = words_of(self.bitmap(numbers or {}))
        bits = {f"engineer_bits.{index}": {"or": word} for index, word in words.items()}
        if pairs:
            for version, version_words in pair_words(self.pair_bitmaps(numbers or {})).items():
                bits.update({f"pair_bits.{version}.{i}": {"or": w} for i, w in version_words.items()})
        if bits:
            update["$bit"] = bits
        return update


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


async def bump_each(buckets: Sequence[RollupBucket], delta: RollupDelta) -> None:
    """Applies `delta` to each bucket (an event's day and hour, per version and whole model), side by side:
    one round trip of latency for all. Its engineers are numbered once for them all."""
    numbers = await engineer_numbers(delta.engineers)
    updates = {keeps: delta.to_update(numbers, pairs=keeps) for keeps in (False, True)}
    await asyncio.gather(*(_bump(bucket, updates[bucket.grain.keeps_pairs]) for bucket in buckets))


async def _bump(bucket: RollupBucket, update: Condition) -> None:
    """An update first, and an insert only for the bucket's first event."""
    collection = bucket.grain.collection
    if not update:
        return
    if (await collection.update_one({"_id": bucket.key}, update)).matched_count:
        return
    with contextlib.suppress(DuplicateKeyError):
        await collection.insert_one(bucket.empty_document())
    await collection.update_one({"_id": bucket.key}, update)


async def bump_many(
    deltas: Mapping[RollupBucket, RollupDelta], chunk: int = 1000, rolled_to: datetime | None = None
) -> int:
    """`bump` for many buckets in bulk: insert the missing buckets (duplicates ignored), then update;
    `rolled_to`: the roller's watermark they are built to (a rebuild)."""
    items = list(deltas.items())
    numbers = await engineer_numbers(set().union(*(d.engineers for _, d in items)))
    for grain in GRAINS:
        mine = [(b, d) for b, d in items if b.grain is grain]
        for start in range(0, len(mine), chunk):
            part = mine[start : start + chunk]
            inserts = [InsertOne(b.empty_document()) for b, _ in part]
            try:
                await grain.collection.bulk_write(inserts, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                    raise
            updates = [
                UpdateOne({"_id": b.key}, _rolled(d.to_update(numbers, grain.keeps_pairs), rolled_to))
                for b, d in part
            ]
            await grain.collection.bulk_write(updates)
    return len(items)


def _rolled_before(target: datetime) -> Condition:
    """A bucket not yet rolled to `target` (`rolled_to` missing on buckets no fold has written)."""
    return {"$or": [{"rolled_to": {"$lt": target}}, {"rolled_to": None}]}


async def fold(deltas: Mapping[RollupBucket, RollupDelta], target: datetime) -> int:
    """Applies each bucket's delta of one fold of the roller (analytics/roller.py), once: each update also
    sets the bucket's `rolled_to` to `target` and applies only to a bucket whose `rolled_to` is earlier, so
    a fold re-run to the same target (after a crash, or by a second holder) skips the buckets already
    written. One grain after another, the buckets of a grain side by side. Returns the buckets written."""
    numbers = await engineer_numbers(set().union(*(d.engineers for d in deltas.values())))
    written = 0
    for grain in GRAINS:
        mine = [(bucket, delta) for bucket, delta in deltas.items() if bucket.grain is grain]
        found = await asyncio.gather(*(fold_bucket(b, d, numbers, target) for b, d in mine))
        written += sum(found)
    return written


async def fold_bucket(
    bucket: RollupBucket, delta: RollupDelta, numbers: Mapping[str, int], target: datetime
) -> bool:
    """One bucket of a fold: an update first, and an insert only for the bucket's first fold."""
    update = _rolled(delta.to_update(numbers, bucket.grain.keeps_pairs), target)
    flt = {"_id": bucket.key, **_rolled_before(target)}
    collection = bucket.grain.collection
    if (await collection.update_one(flt, update)).matched_count:
        return True
    with contextlib.suppress(DuplicateKeyError):
        await collection.insert_one(bucket.empty_document())
    return bool((await collection.update_one(flt, update)).matched_count)


@dataclass(frozen=True)
class Staged:
    """One rollup stage of a stored event that may not be in the rollups yet: the event, the stage, when it
    was staged, and what it adds to each of the event's buckets."""

    doc: Mapping[str, Any]
    stage: str
    at: datetime
    delta: RollupDelta


Pending = Sequence[Staged]
Adjusted = list[tuple[Mapping[str, Any], RollupDelta]]


async def _split(
    grain: Grain, pending: Pending, keep: Callable[[Mapping[str, Any]], bool]
) -> tuple[Condition, Adjusted]:
    """The buckets of `grain` that pending stages (of events `keep` keeps) fall in: a condition that leaves
    them out of a read, and each of them as stored with the stages it does not hold yet added (a stage
    later than its `rolled_to`; all of them for a bucket not written yet).

    Exact while the roller folds: a bucket and its `rolled_to` change in one update, and each bucket is read
    once, either here or (the others, which no pending stage touches) by the caller's read."""
    staged: dict[str, tuple[RollupBucket, list[Staged]]] = {}
    for stage in pending:
        if keep(stage.doc):
            bucket = RollupBucket.of_doc(stage.doc, grain)
            staged.setdefault(bucket.key, (bucket, []))[1].append(stage)
    if not staged:
        return {}, []
    keys = sorted(staged)
    stored = {doc["_id"]: doc async for doc in grain.collection.find({"_id": {"$in": keys}})}
    out: Adjusted = []
    for key in keys:
        bucket, stages = staged[key]
        doc = stored.get(key)
        rolled = None if doc is None else doc.get("rolled_to")
        delta = RollupDelta() if doc is None else RollupDelta.of_bucket(doc)
        for stage in stages:
            if rolled is None or stage.at > rolled:
                delta.add(stage.delta)
        out.append((doc if doc is not None else bucket.empty_document(), delta))
    return {"_id": {"$nin": keys}}, out


def _keep_query(q: EventQuery) -> Callable[[Mapping[str, Any]], bool]:
    return lambda doc: events_db.matches(q, doc)


def _rolled(update: Condition, rolled_to: datetime | None) -> Condition:
    return update if rolled_to is None else {**update, "$set": {"rolled_to": rolled_to}}


async def engineer_numbers(names: Iterable[str]) -> dict[str, int]:
    """The numbers of engineer names in the rollups' database (new names get new numbers)."""
    names = set(names)
    if not names:
        return {}
    return await numbers_for(DownloadRollup.get_pymongo_collection().database).numbers(names)


async def delete_from(day: datetime | None) -> None:
    """Deletes the buckets (of every length) from `day` on (all of them with None)."""
    for grain in GRAINS:
        await grain.collection.delete_many({grain.field: {"$gte": day}} if day else {})


async def first_day() -> datetime | None:
    """The earliest day any event was counted on (None: no buckets): where a raw scan without `since` starts
    (the whole-model days are the fewest buckets; a sorted read of the events themselves scans them all on
    SecantusDB 0.7)."""
    found = await DailyModelRollup.get_pymongo_collection().find_one({}, {"day": 1}, sort=[("day", 1)])
    return None if found is None else found["day"].replace(tzinfo=UTC)


async def downloads_by_day() -> dict[datetime, int]:
    """How many download events started on each UTC day (from the whole-model days: the fewest buckets)."""
    rows = await DAY_BY_MODEL.collection.aggregate([{"$group": {"_id": "$day", "n": {"$sum": "$downloads"}}}])
    return {row["_id"].replace(tzinfo=UTC): int(row["n"]) async for row in rows if row["_id"] is not None}


async def count_downloads(pending: Pending = ()) -> int:
    """All download events, summed from the buckets: a few thousand documents instead of a scan of every
    event (SecantusDB counts a collection by scanning it), from the whole-model days: the fewest; with the
    `pending` stages the roller has not folded yet."""
    leave_out, adjusted = await _split(DAY_BY_MODEL, pending, lambda _: True)
    pipeline = [{"$match": leave_out}, {"$group": {"_id": None, "n": {"$sum": "$downloads"}}}]
    rows = await DAY_BY_MODEL.collection.aggregate(pipeline)
    found = [row["n"] async for row in rows]
    return (int(found[0]) if found else 0) + sum(delta.downloads for _, delta in adjusted)


async def _totals(
    match: Condition, key: Callable[[Mapping[str, Any]], Any], grain: Grain, pending: Pending
) -> dict[Any, tuple[int, Any]]:
    """(completed downloads, last completion) per `key` of the buckets matching `match`, with the pending
    stages of the events in them (`match` is over the bucket key fields an event shares)."""
    fields = sorted({name for name in match if name in grain.keys})
    leave_out, adjusted = await _split(grain, pending, lambda doc: _inside(match, doc))
    group = {name: f"${name}" for name in fields}
    pipeline: list[Condition] = [
        {"$match": {**match, **leave_out, "completed": {"$gt": 0}}},
        {"$group": {"_id": group, "n": {"$sum": "$completed"}, "last": {"$max": "$last_completed_at"}}},
    ]
    totals: dict[Any, tuple[int, Any]] = {}
    rows = [(r["_id"], r["n"], r["last"]) async for r in await grain.collection.aggregate(pipeline)]
    rows += [(doc, delta.completed, delta.last_completed_at) for doc, delta in adjusted if delta.completed]
    for doc, completed, last in rows:
        n, latest = totals.get(key(doc), (0, None))
        totals[key(doc)] = (n + completed, _max(latest, last))
    return totals


def _inside(match: Condition, doc: Mapping[str, Any]) -> bool:
    """Whether a stored event's fields satisfy a match of `{field: {"$in": values}}` conditions."""
    return all(doc.get(name) in cond["$in"] for name, cond in match.items())


async def totals_by_version(
    keys: Sequence[tuple[str, int]], pending: Pending = ()
) -> dict[tuple[str, int], tuple[int, Any]]:
    """(completed downloads, last completion) per (name, version) that has any, in one aggregation (and
    the `pending` stages of those versions)."""
    match = {
        "model_name": {"$in": sorted({name for name, _ in keys})},
        "model_version": {"$in": sorted({version for _, version in keys})},
    }
    return await _totals(match, lambda d: (d["model_name"], d["model_version"]), DAY, pending)


async def totals_by_model(names: Sequence[str], pending: Pending = ()) -> dict[str, tuple[int, Any]]:
    """(completed downloads, last completion) per model name across its versions, in one aggregation (and
    the `pending` stages of those models)."""
    match = {"model_name": {"$in": sorted(set(names))}}
    return await _totals(match, lambda d: d["model_name"], DAY_BY_MODEL, pending)


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
    `req` needs no version or mode), with their filter; None when no buckets of that length can."""
    by_model = BY_MODEL.get(grain)
    for candidate in (by_model, grain) if by_model is not None else (grain,):
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

    `pending`: stages the roller may not have folded yet, added to their buckets (see `_split`)."""
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

    leave_out, adjusted = await _split(grain, pending, _keep_query(req.query))
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
    leave_out, adjusted = await _split(grain, pending, _keep_query(req.query))
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
    page = ordered_page(req, period="_id.period")
    if adjusted:
        head = [
            {"$documents": await _as_stored(grain, adjusted)},
            {"$unionWith": {"coll": grain.collection.name, "pipeline": [{"$match": {**match, **leave_out}}]}},
        ]
        cursor = await grain.collection.database.aggregate([*head, *pipeline, *page])
    else:
        cursor = await grain.collection.aggregate([{"$match": match}, *pipeline, *page])
    docs, total = await read_page(cursor)
    groups = []
    for doc in docs:
        # The row's sums and maxima (under the bucket fields' names), then each bucket's histogram and bitmap.
        delta = RollupDelta.of_bucket(doc)
        parts = zip(doc["hists"], doc["throughputs"], doc["engineer_words"], doc["pairs"], strict=True)
        for hist, throughputs, words, pairs in parts:
            bucket = {"duration_hist": hist, "throughput_hist": throughputs, "engineer_bits": words, **pairs}
            delta.add(RollupDelta.of_bucket(bucket))
        groups.append((dict(doc["_id"] or {}), delta))
    return groups, total


async def _as_stored(grain: Grain, adjusted: Adjusted) -> list[dict[str, Any]]:
    """Buckets with their pending stages added, as they would be stored (engineers numbered into bitmaps).

    SecantusDB quirk: it runs `$documents` only first in a database-level aggregate (`{aggregate: 1}`), not
    inside `$unionWith` on a collection; so the pending buckets come first and the stored ones are unioned
    in, which MongoDB (5.1 on) runs alike."""
    numbers = await engineer_numbers(set().union(*(delta.engineers for _, delta in adjusted)))
    out = []
    for doc, delta in adjusted:
        whole = RollupDelta()
        whole.add(delta)
        whole.engineer_bits, whole.pair_bits = delta.bitmap(numbers), delta.pair_bitmaps(numbers)
        keys = {name: doc.get(name) for name in ("_id", grain.field, *grain.keys)}
        out.append({**keys, **stored_figures(whole, grain.keeps_pairs)})
    return out


async def completed_by_model(q: EventQuery, pending: Pending = ()) -> dict[str, int] | None:
    """Completed downloads per model name for `q` (without its status condition), with the `pending`
    stages of its events, or None."""
    grain = DAY_BY_MODEL
    match = rollup_filter(q, grain)
    if match is None:
        grain, match = DAY, rollup_filter(q)
    if match is None:
        return None
    leave_out, adjusted = await _split(grain, pending, _keep_query(q))
    pipeline: list[Condition] = [
        {"$match": {**match, **leave_out}},
        {"$group": {"_id": "$model_name", "c": {"$sum": "$completed"}}},
    ]
    rows = await grain.collection.aggregate(pipeline)
    found = {r["_id"]: r["c"] async for r in rows}
    for doc, delta in adjusted:
        found[doc["model_name"]] = found.get(doc["model_name"], 0) + delta.completed
    return {name: count for name, count in found.items() if count}
