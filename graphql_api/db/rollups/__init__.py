"""Owner of the rollup collections: bucket increments, bulk writes, and the stats they can answer exactly.

A bucket holds one UTC day (or hour) of one model version, project and mode, or of one whole model (all its
versions and modes: `*_by_model`). SecantusDB 0.7 lost increments under
concurrent upserts, so a bucket is created by a plain insert (a lost race is a DuplicateKeyError) and every
writer then only updates it; the bulk path does the same in two bulk calls.

The package's names, from `buckets` (grains, keys, `RollupDelta`), `writes` (increments and folds),
`pending` (stages not folded yet), `answers` (what the buckets answer, grouped) and `totals`.
"""

from __future__ import annotations

from .answers import (
    DIMENSIONS,
    MERGED_METRICS,
    Group,
    add_to,
    bucket_filter,
    filters,
    grouped,
    narrowest,
    page_in_db,
    rollup_filter,
)
from .buckets import (
    BY_MODEL,
    COARSER,
    COUNTS,
    DAY,
    DAY_BY_MODEL,
    DAY_TOTAL,
    FINE_KEYS,
    GRAINS,
    HOUR,
    HOUR_BY_MODEL,
    HOUR_TOTAL,
    MODEL_KEYS,
    TOTAL_KEYS,
    TOTALS,
    Grain,
    RollupBucket,
    RollupDelta,
    Version,
    engineer_numbers,
    pair_words,
    pairs_of,
    stored_figures,
)
from .pending import Pending, Staged
from .totals import (
    completed_by_model,
    count_downloads,
    downloads_by_day,
    first_day,
    totals_by_model,
    totals_by_version,
)
from .writes import bump_each, bump_many, delete_from, fold, fold_bucket

__all__ = [
    "BY_MODEL",
    "COARSER",
    "COUNTS",
    "DAY",
    "DAY_BY_MODEL",
    "DAY_TOTAL",
    "DIMENSIONS",
    "FINE_KEYS",
    "GRAINS",
    "HOUR",
    "HOUR_BY_MODEL",
    "HOUR_TOTAL",
    "MERGED_METRICS",
    "MODEL_KEYS",
    "TOTALS",
    "TOTAL_KEYS",
    "Grain",
    "Group",
    "Pending",
    "RollupBucket",
    "RollupDelta",
    "Staged",
    "Version",
    "add_to",
    "bucket_filter",
    "bump_each",
    "bump_many",
    "completed_by_model",
    "count_downloads",
    "delete_from",
    "downloads_by_day",
    "engineer_numbers",
    "filters",
    "first_day",
    "fold",
    "fold_bucket",
    "grouped",
    "narrowest",
    "page_in_db",
    "pair_words",
    "pairs_of",
    "rollup_filter",
    "stored_figures",
    "totals_by_model",
    "totals_by_version",
]
