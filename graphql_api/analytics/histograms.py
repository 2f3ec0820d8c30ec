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
# Throughputs (bytes per second) use the same buckets (from 0.001 B/s): the same bound holds for them.
THROUGHPUT_MIN = 0.001


def duration_bucket(seconds: float, minimum: float = HIST_MIN) -> int:
    if seconds <= minimum:
        return 0
    return 1 + int(math.log(seconds / minimum) / _LOG_RATIO)


def throughput_bucket(bytes_per_second: float) -> int:
    return duration_bucket(bytes_per_second, THROUGHPUT_MIN)


def bucket_value(index: int, minimum: float = HIST_MIN) -> float:
    """A bucket's representative value: its geometric midpoint (bucket 0 holds all ≤ `minimum`)."""
    if index == 0:
        return minimum
    lower = minimum * HIST_RATIO ** (index - 1)
    return lower * math.sqrt(HIST_RATIO)


def histogram_percentile(hist: dict[int, int], p: float, minimum: float = HIST_MIN) -> float | None:
    """Nearest-rank percentile read off a merged histogram: the geometric midpoint of the rank's bucket."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_value(index, minimum)
    return None  # pragma: no cover - the loop always reaches rank
