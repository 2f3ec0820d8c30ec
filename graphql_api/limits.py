"""Per-key token buckets (in memory, per process): the mutation and download rate limit, the per-principal
cost budget, and the caps on concurrent raw scans."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from . import codes
from .errors import DomainError


@dataclass(frozen=True)
class Quota:
    """A key's bucket after a take: its size, what is left, and seconds until it is full again."""

    limit: int
    remaining: int
    reset: float


class RateLimited(DomainError):
    code = codes.RATE_LIMITED

    def __init__(self, retry_after: float, quota: Quota | None = None) -> None:
        super().__init__(f"too many requests; retry in {math.ceil(retry_after)} s")
        self.retry_after = retry_after
        self.quota = quota


@dataclass
class Buckets:
    """A token bucket per key: `capacity` points, refilled evenly so that an empty bucket is full again after
    `period` seconds. Each worker process keeps its own buckets, so with N workers a client can reach up to N
    times the rate; that bounds abuse, it is not a quota."""

    capacity: float
    period: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key → (tokens, at)

    @property
    def rate(self) -> float:
        return self.capacity / self.period

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def _quota(self, tokens: float) -> Quota:
        return Quota(int(self.capacity), int(tokens), (self.capacity - tokens) / self.rate)

    def peek(self, key: str) -> Quota:
        return self._quota(self._level(key, self.clock()))

    def take(self, key: str, cost: float = 1) -> Quota:
        """Takes `cost` points, or raises RateLimited (taking nothing) when fewer are left."""
        now = self.clock()
        tokens = self._level(key, now)
        if tokens < cost:
            self._store(key, tokens, now)
            raise RateLimited((cost - tokens) / self.rate, self._quota(tokens))
        return self._store(key, tokens - cost, now)

    def charge(self, key: str, cost: float) -> Quota:
        """Takes `cost` points, or whatever is left: for work already done (a refused operation)."""
        now = self.clock()
        return self._store(key, max(0.0, self._level(key, now) - cost), now)

    def _store(self, key: str, tokens: float, now: float) -> Quota:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 100_000:  # forget keys whose bucket is full again rather than grow unbounded
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < self.period}
        return self._quota(tokens)


class RateLimiter:
    """`per_minute` requests a minute per key on average, up to `burst` at once (0: no limit)."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.buckets = Buckets(float(burst), 60.0 * burst / per_minute, clock) if per_minute > 0 else None

    def take(self, key: str, cost: int = 1) -> None:
        if self.buckets is not None:
            self.buckets.take(key, cost)


@dataclass(frozen=True)
class Spent:
    """One operation's cost: the price asked (`requested`), the points taken (`actual`), the bucket after."""

    requested: int
    actual: int
    quota: Quota

    def as_extension(self) -> dict[str, int]:
        return {
            "requested": self.requested,
            "actual": self.actual,
            "remaining": self.quota.remaining,
            "limit": self.quota.limit,
            "reset": math.ceil(self.quota.reset),
        }

    def headers(self) -> dict[str, str]:
        """The IETF draft's three RateLimit headers (draft-ietf-httpapi-ratelimit-headers-07)."""
        return {
            "ratelimit-limit": str(self.quota.limit),
            "ratelimit-remaining": str(self.quota.remaining),
            "ratelimit-reset": str(math.ceil(self.quota.reset)),
        }


class CostBudget:
    """Points per principal over a window, refilled evenly (like GitHub's hourly points): every operation's
    price is taken from its caller's bucket. Callers without a principal (no token, a bad token, header mode
    without X-Engineer-ID) share one smaller bucket per client address."""

    def __init__(
        self, points: int, anonymous_points: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.principals = Buckets(float(points), window, clock)
        self.anonymous = Buckets(float(min(anonymous_points, points)), window, clock)

    def bucket(self, anonymous: bool) -> Buckets:
        return self.anonymous if anonymous else self.principals

    def check(self, key: str, anonymous: bool) -> Quota:
        """The bucket now; RateLimited when not even one point is left (refused before any parsing)."""
        quota = self.bucket(anonymous).peek(key)
        if quota.remaining < 1:
            raise RateLimited((1 - quota.remaining) / self.bucket(anonymous).rate, quota)
        return quota

    def spend(self, key: str, anonymous: bool, cost: int) -> Spent:
        return Spent(cost, cost, self.bucket(anonymous).take(key, cost))

    def charge(self, key: str, anonymous: bool, requested: int, cost: int) -> Spent:
        """Takes `cost` points (or all that is left) for an operation refused after work was done on it."""
        bucket = self.bucket(anonymous)
        before = bucket.peek(key).remaining
        quota = bucket.charge(key, cost)
        return Spent(requested, before - quota.remaining, quota)


PIECE_SECONDS = 0.5


class ScanSlots:
    """Caps on raw-event scans running at once: `per_key` for one principal, `total` for the instance. A scan
    takes one slot per bounded piece, so between pieces others' scans get their turn; one principal's flood
    waits in the app (its deadline running) and never holds more than `per_key` of the database."""

    def __init__(self, per_key: int, total: int, piece_seconds: float = PIECE_SECONDS) -> None:
        self.per_key = per_key
        self.piece_seconds = piece_seconds
        self.total = asyncio.Semaphore(total)
        self._keys: dict[str, tuple[asyncio.Semaphore, int]] = {}  # key → (semaphore, users)
        self.in_flight = 0  # pieces running on the database now
        self.started = 0  # pieces started in all

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        """One principal's use of the slots for the length of an operation (the semaphore outlives it while
        another operation of the same key holds it)."""
        sem, users = self._keys.get(key, (asyncio.Semaphore(self.per_key), 0))
        self._keys[key] = (sem, users + 1)
        token = _slot.set((self, sem))
        try:
            yield
        finally:
            _slot.reset(token)
            sem, users = self._keys[key]
            if users <= 1:
                del self._keys[key]
            else:
                self._keys[key] = (sem, users - 1)


_slot: ContextVar[tuple[ScanSlots, asyncio.Semaphore] | None] = ContextVar("scan_slot", default=None)


def piece_seconds() -> float:
    """About how much database time one piece of a raw scan should take."""
    current = _slot.get()
    return current[0].piece_seconds if current is not None else PIECE_SECONDS


@asynccontextmanager
async def scan_piece() -> AsyncIterator[None]:
    """Holds a slot for one bounded piece of a raw scan (no cap outside a request: the CLI, the sweeper).
    The wait is not bounded here: an `asyncio.timeout` around it cancels the waiting task, and under load
    such a cancellation reached the HTTP handler as an uncaught CancelledError (a 500). The caller checks its
    deadline once it has the slot, so a late waiter leaves at once without touching the database."""
    current = _slot.get()
    if current is None:
        yield
        return
    slots, own = current
    await own.acquire()
    try:
        await slots.total.acquire()
    except BaseException:
        own.release()
        raise
    slots.in_flight += 1
    slots.started += 1
    try:
        yield
    finally:
        slots.in_flight -= 1
        slots.total.release()
        own.release()
