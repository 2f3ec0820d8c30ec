"""Geometric duration histograms: the bucket of a duration, and percentiles read off merged buckets.

Buckets have ratio HIST_RATIO from HIST_MIN seconds. A percentile read from them is the bucket's geometric
midpoint, so it is within a factor sqrt(HIST_RATIO) (about ±5%) of the exact value (and within the
bucket's bounds: [lower, lower * HIST_RATIO)).
"""

from __future__ import annotations

import math

HIST_MIN = 0.001
HIST_RATIO = 1.1
_LOG_RATIO = math.log(HIST_RATIO)


def duration_bucket(seconds: float) -> int:
    if seconds <= HIST_MIN:
        return 0
    return 1 + int(math.log(seconds / HIST_MIN) / _LOG_RATIO)


def bucket_value(index: int) -> float:
    """A bucket's representative duration: its geometric midpoint (bucket 0 holds all ≤ HIST_MIN)."""
    if index == 0:
        return HIST_MIN
    lower = HIST_MIN * HIST_RATIO ** (index - 1)
    return lower * math.sqrt(HIST_RATIO)


def histogram_percentile(hist: dict[int, int], p: float) -> float | None:
    """Nearest-rank percentile read off a merged histogram: the geometric midpoint of the rank's bucket."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_value(index)
    return None  # pragma: no cover - the loop always reaches rank
