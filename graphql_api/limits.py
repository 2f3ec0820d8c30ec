"""Per-principal rate limits for mutations and downloads (in memory, per process: a token bucket each)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .errors import DomainError


class RateLimited(DomainError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many requests; retry in {math.ceil(retry_after)} s")
        self.retry_after = retry_after


@dataclass
class RateLimiter:
    """`per_minute` requests a minute per key on average, up to `burst` at once. Each worker process keeps
    its own buckets, so with N workers a client can reach up to N times the rate; that bounds abuse, it
    is not a quota."""

    per_minute: int
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key → (tokens, at)

    def take(self, key: str, cost: int = 1) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            raise RateLimited((cost - tokens) / rate)
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > 100_000:  # forget idle keys rather than grow without bound
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
