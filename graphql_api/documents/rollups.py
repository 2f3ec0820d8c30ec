"""The rollup collections: pre-aggregated download figures per day or hour, per version and mode or per
whole model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from beanie import Document
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, IndexModel

from .downloads import DownloadMode


@dataclass
class BucketCounts:
    """A rollup bucket's whole-number figures, all summed: declared once, for the stored buckets
    (`RollupFigures`) and for what events add to one (`RollupDelta`, db/rollups/buckets.py)."""

    downloads: int = 0
    completed: int = 0
    aborted: int = 0
    failed: int = 0
    bytes_sent: int = 0
    duration_count: int = 0
    # Downloads whose client reported the SHA-256 matched / did not (counted in the download's start bucket).
    verified: int = 0
    mismatched: int = 0


class RollupFigures(BaseModel, BucketCounts):
    """What a rollup bucket holds about its downloads, whatever the bucket's length and key: its
    `BucketCounts` (pydantic takes a dataclass base's fields as its own) and the fields below."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    project_name: str
    duration_sum: float = 0.0
    duration_max: float | None = None
    last_completed_at: datetime | None = None
    # Sparse histogram of durations: bucket index (as a string key) → count; see analytics.histograms.
    duration_hist: dict[str, int] = Field(default_factory=dict)
    # Unique engineers as a bitmap of their numbers (db/engineers.py): word index (string) → 64-bit word.
    engineer_bits: dict[str, int] = Field(default_factory=dict)


def rollup_indexes(start: str) -> list[IndexModel]:
    """A rollup collection's indexes, by its bucket-start field: a time range per model, and per project."""
    return [
        IndexModel([(start, ASCENDING), ("model_name", ASCENDING)], name=f"{start}_model"),
        IndexModel([("project_name", ASCENDING), (start, ASCENDING)], name=f"project_{start}"),
    ]


class RollupBucket(Document, RollupFigures):
    """A stored rollup bucket. `_id` is the bucket key itself, so the first writer can create it with a plain
    insert (a lost race is a DuplicateKeyError) and every writer then only `$inc`s: no upsert races."""

    id: str  # type: ignore[assignment]


class PerVersionAndMode(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: int
    mode: DownloadMode


class DownloadRollup(RollupBucket, PerVersionAndMode):
    """Downloads of one model version, project and mode on one UTC day, pre-aggregated at write time."""

    day: datetime

    class Settings:
        name = "download_rollups_daily"
        indexes = rollup_indexes("day")


class HourlyRollup(RollupBucket, PerVersionAndMode):
    """The same figures per UTC hour: a range that does not start and end on midnights is answered from
    the days and hours inside it, and raw events only for the minutes at its edges."""

    hour: datetime

    class Settings:
        name = "download_rollups_hourly"
        indexes = rollup_indexes("hour")


class DailyModelRollup(RollupBucket):
    """The same figures per UTC day and model, all its versions and modes together: what a query that
    neither filters nor groups by version or mode reads (half the buckets or fewer)."""

    day: datetime

    class Settings:
        name = "download_rollups_daily_by_model"
        indexes = rollup_indexes("day")


class HourlyModelRollup(RollupBucket):
    """The same figures per UTC hour and model, all its versions and modes together."""

    hour: datetime

    class Settings:
        name = "download_rollups_hourly_by_model"
        indexes = rollup_indexes("hour")


class DailyTotalRollup(RollupBucket):
    """The same figures per UTC day and model, all its versions, modes and client kinds together: what a
    query that neither filters nor groups by any of them reads (a quarter of the whole-model buckets, which
    keep one bucket per client kind)."""

    day: datetime

    class Settings:
        name = "download_rollups_daily_totals"
        indexes = rollup_indexes("day")


class HourlyTotalRollup(RollupBucket):
    """The same figures per UTC hour and model, all its versions, modes and client kinds together."""

    hour: datetime

    class Settings:
        name = "download_rollups_hourly_totals"
        indexes = rollup_indexes("hour")
