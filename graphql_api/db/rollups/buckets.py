"""Rollup buckets: their grains, keys and stored shape, and what events add to one (`RollupDelta`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from beanie import Document
from bson.int64 import Int64

from ...documents import (
    BucketCounts,
    DailyModelRollup,
    DailyTotalRollup,
    DownloadEvent,
    DownloadRollup,
    HourlyModelRollup,
    HourlyRollup,
    HourlyTotalRollup,
)
from ...queries import day_of, hour_of
from ..common import Condition
from ..engineers import bitmap_from, bitmap_of, numbers_for, words_of

# A bucket's whole-number figures, all summed (declared by `BucketCounts`).
COUNTS = tuple(f.name for f in fields(BucketCounts))


# The fields that make a bucket's key besides its start: every version and mode apart, or a model whole.
FINE_KEYS = ("model_name", "model_version", "project_name", "mode", "client_kind")
MODEL_KEYS = ("model_name", "project_name", "client_kind")
TOTAL_KEYS = ("model_name", "project_name")


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
DAY_TOTAL = Grain("day", DailyTotalRollup, "day", "%Y-%m-%d", day_of, TOTAL_KEYS)
HOUR_TOTAL = Grain("hour", HourlyTotalRollup, "hour", "%Y-%m-%dT%H", hour_of, TOTAL_KEYS)
GRAINS = (DAY, HOUR, DAY_BY_MODEL, HOUR_BY_MODEL, DAY_TOTAL, HOUR_TOTAL)
# Each fine grain's whole-model twin: the same figures in fewer buckets, for queries that need no version
# or mode (SecantusDB's cost of a read grows with the number of buckets it reads).
BY_MODEL = {DAY: DAY_BY_MODEL, HOUR: HOUR_BY_MODEL}
# Each whole-model grain's twin without client kinds: a quarter of its buckets at most, for queries that
# need no version, mode or client kind (most dashboards). Filled from the whole-model buckets once
# (migrations.fill_model_totals, under the roller's lease).
TOTALS = {DAY_BY_MODEL: DAY_TOTAL, HOUR_BY_MODEL: HOUR_TOTAL}
# What answers a query over a fine grain's length, fewest buckets first.
COARSER = {fine: (TOTALS[coarse], coarse, fine) for fine, coarse in BY_MODEL.items()}


@dataclass(frozen=True)
class RollupBucket:
    start: datetime
    model_name: str
    model_version: int | None
    project_name: str
    mode: str | None
    grain: Grain = DAY
    client_kind: str | None = "UNKNOWN"

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
        found = doc.get("client_kind") or "UNKNOWN"
        found = found.value if hasattr(found, "value") else str(found)
        kind = found if "client_kind" in grain.keys else None  # the totals: one bucket for every kind
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
class RollupDelta(BucketCounts):
    """What some events add to one bucket: its counts (`BucketCounts`), durations (with their histogram),
    engineers (by name from events, as a bitmap of their numbers from stored buckets; see db/engineers.py)."""

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
        self.duration_max = max_of(self.duration_max, other.duration_max)
        self.last_completed_at = max_of(self.last_completed_at, other.last_completed_at)
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


def max_of(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


async def engineer_numbers(names: Iterable[str]) -> dict[str, int]:
    """The numbers of engineer names in the rollups' database (new names get new numbers)."""
    names = set(names)
    if not names:
        return {}
    return await numbers_for(DownloadRollup.get_pymongo_collection().database).numbers(names)
