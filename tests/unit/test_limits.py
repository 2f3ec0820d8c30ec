"""limits.py: token buckets, the cost budget and the raw-scan slots, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from graphql_api.limits import Buckets, CostBudget, RateLimited, RateLimiter, ScanSlots, scan_piece


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_evenly_and_refuses_what_it_lacks() -> None:
    """A take beyond what is left is refused whole (nothing taken) with the wait until it would fit."""
    clock = Clock()
    buckets = Buckets(10, 100, clock)  # 0.1 point a second
    assert buckets.take("k", 7).remaining == 3
    with pytest.raises(RateLimited) as refused:
        buckets.take("k", 5)
    assert refused.value.retry_after == pytest.approx(20)
    assert refused.value.quota is not None and refused.value.quota.remaining == 3
    clock.now += 20
    quota = buckets.take("k", 5)
    assert quota.remaining == 0 and quota.reset == pytest.approx(100)
    clock.now += 1000
    assert buckets.peek("k").remaining == 10 and buckets.peek("other").remaining == 10


def test_charge_takes_what_is_left_and_never_goes_below_zero() -> None:
    """Work already done is charged even when it costs more than is left."""
    buckets = Buckets(5, 60, Clock())
    assert buckets.charge("k", 3).remaining == 2
    assert buckets.charge("k", 9).remaining == 0


def test_the_rate_limiter_keeps_its_burst_and_rate() -> None:
    """RateLimiter(per_minute, burst) on the shared buckets: the burst at once, then per_minute a minute."""
    clock = Clock()
    limiter = RateLimiter(60, 3, clock)
    for _ in range(3):
        limiter.take("p")
    with pytest.raises(RateLimited):
        limiter.take("p")
    clock.now += 1
    limiter.take("p")
    RateLimiter(0, 0).take("p")  # 0: no limit


def test_the_cost_budget_keeps_anonymous_callers_smaller() -> None:
    """Principals and addresses have separate buckets; the anonymous one is never the larger."""
    clock = Clock()
    budget = CostBudget(100, 1_000, 3600, clock)
    assert budget.anonymous.capacity == 100
    budget = CostBudget(100, 10, 3600, clock)
    spent = budget.spend("address:a", True, 8)
    assert (spent.requested, spent.actual, spent.quota.remaining, spent.quota.limit) == (8, 8, 2, 10)
    charged = budget.charge("address:a", True, 50, 50)
    assert (charged.requested, charged.actual, charged.quota.remaining) == (50, 2, 0)
    with pytest.raises(RateLimited):
        budget.check("address:a", True)
    budget.check("principal:a", False)
    assert spent.headers() == {"ratelimit-limit": "10", "ratelimit-remaining": "2", "ratelimit-reset": "2880"}
    assert spent.as_extension()["reset"] == 2880


async def test_scan_slots_cap_one_key_and_the_instance() -> None:
    """At most `per_key` pieces of one key and `total` of all run at once; outside a request nothing waits."""
    slots = ScanSlots(per_key=2, total=3)
    peak: dict[str, int] = {"a": 0, "b": 0, "all": 0}
    running: dict[str, int] = {"a": 0, "b": 0}

    async def piece(key: str) -> None:
        with slots.held(key):
            async with scan_piece():
                running[key] += 1
                peak[key] = max(peak[key], running[key])
                peak["all"] = max(peak["all"], slots.in_flight)
                await asyncio.sleep(0.01)
                running[key] -= 1

    await asyncio.gather(*[piece("a") for _ in range(8)], *[piece("b") for _ in range(3)])
    assert peak["a"] == 2 and 1 <= peak["b"] <= 2 and peak["all"] == 3
    assert slots.in_flight == 0 and slots.started == 11
    async with scan_piece():  # no request: no slot to take
        pass
