"""Duration histograms: bucket bounds and percentiles within the documented error (no server)."""

from __future__ import annotations

import math
import random

from graphql_api.analytics.histograms import (
    HIST_MIN,
    HIST_RATIO,
    bucket_value,
    duration_bucket,
    histogram_percentile,
)


def test_bucket_value_lies_within_its_bucket() -> None:
    """Every duration's bucket midpoint is within a factor sqrt(HIST_RATIO) of the duration itself."""
    rng = random.Random(1)
    for _ in range(2000):
        d = 10 ** rng.uniform(-4, 4)
        value = bucket_value(duration_bucket(d))
        if d <= HIST_MIN:
            assert value == HIST_MIN
        else:
            assert 1 / math.sqrt(HIST_RATIO) - 1e-9 <= value / d <= math.sqrt(HIST_RATIO) + 1e-9


def test_percentiles_match_nearest_rank_within_the_bound() -> None:
    """p50 and p95 read off a histogram are within sqrt(HIST_RATIO) of the exact nearest-rank values."""
    rng = random.Random(2)
    durations = sorted(rng.lognormvariate(0, 1.5) for _ in range(999))
    hist: dict[int, int] = {}
    for d in durations:
        hist[duration_bucket(d)] = hist.get(duration_bucket(d), 0) + 1
    for p in (0.5, 0.95):
        exact = durations[math.ceil(p * len(durations)) - 1]
        got = histogram_percentile(hist, p)
        assert got is not None and abs(math.log(got / exact)) <= math.log(math.sqrt(HIST_RATIO)) + 1e-9


def test_empty_histogram_has_no_percentile() -> None:
    """No durations, no percentile."""
    assert histogram_percentile({}, 0.5) is None
