"""Per-key token buckets (in memory, per process): the mutation and download rate limit, the per-principal
cost budget, a WebSocket's message pace, and the caps on concurrent raw scans."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

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


class OpenSockets:
    """How many acknowledged WebSockets each caller holds on this instance, at most `per_caller` each."""

    def __init__(self, per_caller: int) -> None:
        self.per_caller = per_caller
        self._open: dict[str, int] = {}

    def open(self, key: str) -> bool:
        """Counts a new socket of `key`'s; False (not counted) when it already holds `per_caller`."""
        held = self._open.get(key, 0)
        if held >= self.per_caller:
            return False
        self._open[key] = held + 1
        return True

    def close(self, key: str) -> None:
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)


@dataclass
class Pace:
    """A token bucket for one consumer that handles its events one at a time (a WebSocket's messages):
    `burst` pass at once, then `rate` a second; `wait()` counts an event and says how long to pause before
    handling it, so a faster sender is slowed down rather than refused."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    at: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.at = self.clock()

    def wait(self) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate) - 1
        self.at = now
        return max(0.0, -self.tokens / self.rate)


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
# Raw scans never hold more than this share of the database connection pool (MODELHUB_MONGO_MAX_POOL_SIZE):
# the rest stays for every other read, the health probe's among them.
SCAN_POOL_SHARE = 0.25


def scan_total(configured: int, pool_size: int) -> int:
    """The instance's cap on raw-scan pieces at once: the configured one, within the pool's share."""
    return max(1, min(configured, int(pool_size * SCAN_POOL_SHARE)))


class ScanSlots:
    """Caps on raw-event scans running at once: `per_key` for one principal, `total` for the instance. A scan
    takes one slot per bounded piece, so between pieces others' scans get their turn; one principal's flood
    waits in the app (its deadline running) and never holds more than `per_key` of the database. A slot
    stands for a database connection in use: it is given back when the piece's database work has ended,
    not when its request stopped waiting for it (db/work.piece)."""

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


async def _take(sem: asyncio.Semaphore, within: float | None) -> bool:
    """Takes `sem` within `within` seconds (None: no bound); False when it could not. The wait runs in a
    task of its own, so giving up cancels that task, never the caller's: an `asyncio.timeout` around the
    wait cancelled the request's own task, and under load that cancellation reached the HTTP handler as an
    uncaught CancelledError (a 500)."""
    if not sem.locked():
        await sem.acquire()  # free: returns at once
        return True
    waiter = asyncio.ensure_future(sem.acquire())
    try:
        await asyncio.wait({waiter}, timeout=max(0.0, within) if within is not None else None)
    except BaseException:
        _drop(sem, waiter)
        raise
    if waiter.done() and not waiter.cancelled():
        return True
    _drop(sem, waiter)
    return False


def _drop(sem: asyncio.Semaphore, waiter: asyncio.Future[Any]) -> None:
    """Gives up a wait: a slot already taken is given back, a pending wait is cancelled (Semaphore.acquire
    passes a wake-up it receives while being cancelled on to the next waiter)."""
    if not waiter.done():
        waiter.cancel()
    elif not waiter.cancelled() and waiter.exception() is None:
        sem.release()


Release = Callable[[], None]


def _nothing() -> None:
    return None


async def take_slot(within: float | None) -> Release | None:
    """A slot for one bounded piece of a raw scan, taken within `within` seconds: how to give it back, or
    None when none came free in time. Outside a request (the CLI, the sweeper) there is no cap."""
    current = _slot.get()
    if current is None:
        return _nothing
    slots, own = current
    began = time.monotonic()
    if not await _take(own, within):
        return None
    try:
        left = None if within is None else within - (time.monotonic() - began)
        if not await _take(slots.total, left):
            own.release()
            return None
    except BaseException:
        own.release()
        raise
    slots.in_flight += 1
    slots.started += 1
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            slots.in_flight -= 1
            slots.total.release()
            own.release()

    return release
