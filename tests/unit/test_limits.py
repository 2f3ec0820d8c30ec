"""limits.py: token buckets, the cost budget and the raw-scan slots, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import ExecutionTimeout

from graphql_api.db import work
from graphql_api.limits import (
    Buckets,
    CostBudget,
    RateLimited,
    RateLimiter,
    ScanSlots,
    scan_total,
    take_slot,
)


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
            release = await take_slot(None)
            assert release is not None
            try:
                running[key] += 1
                peak[key] = max(peak[key], running[key])
                peak["all"] = max(peak["all"], slots.in_flight)
                await asyncio.sleep(0.01)
                running[key] -= 1
            finally:
                release()

    await asyncio.gather(*[piece("a") for _ in range(8)], *[piece("b") for _ in range(3)])
    assert peak["a"] == 2 and 1 <= peak["b"] <= 2 and peak["all"] == 3
    assert slots.in_flight == 0 and slots.started == 11
    release = await take_slot(0)  # no request: no slot to take
    assert release is not None
    release()


async def test_a_slot_wait_gives_up_in_time_without_cancelling_its_caller() -> None:
    """A wait for a slot ends after its bound with None (the caller carries on, not cancelled), takes
    nothing, and the slot still goes to the next waiter once it is given back."""
    slots = ScanSlots(per_key=1, total=5)
    with slots.held("a"):
        first = await take_slot(None)
        assert first is not None
        assert await take_slot(0.05) is None
        assert slots.in_flight == 1
        later = asyncio.ensure_future(take_slot(5))
        await asyncio.sleep(0.01)
        first()
        first()  # giving back twice gives back once
        second = await later
        assert second is not None and slots.in_flight == 1
        second()
    assert slots.in_flight == 0 and not slots.total.locked()


def test_scans_take_at_most_a_quarter_of_the_pool() -> None:
    """The instance's scan cap is the configured one within a quarter of the connection pool, at least 1."""
    assert scan_total(6, 100) == 6 and scan_total(6, 12) == 3 and scan_total(6, 4) == 1


async def test_a_piece_holds_its_slot_until_its_read_ends_not_until_its_request_gives_up() -> None:
    """A request whose deadline passes during a piece gets the typed timeout at its deadline, while the
    piece keeps its slot until the read has ended (as a database command runs on after its client left);
    the read is told the time left as its maxTimeMS; a request with no time left takes no slot at all."""
    slots = ScanSlots(per_key=2, total=2)
    ended = asyncio.Event()
    told: list[int | None] = []

    async def read(max_time_ms: int | None) -> int:
        told.append(max_time_ms)
        await asyncio.sleep(0.3)
        ended.set()
        return 1

    with slots.held("a"), work.tagged("rid", 0.1):
        with pytest.raises(ExecutionTimeout):
            await work.piece(read)
        assert slots.in_flight == 1 and not ended.is_set()
        await ended.wait()
        await asyncio.sleep(0)
        assert slots.in_flight == 0
        assert told[0] is not None and 0 < told[0] <= 100
        with pytest.raises(ExecutionTimeout):
            await work.piece(read)  # the deadline has passed
        assert slots.started == 1
    assert await work.piece(read) == 1  # outside a request: no deadline, no maxTimeMS
    assert told[-1] is None
