"""In-process token buckets: per API key (the /v1 routes), and per site key and client IP (`POST /t/collect`).

They live in the API process's memory, so with N API processes behind a load balancer a client gets up to
N times the configured rate; that bounds abuse of a key, it is not exact accounting.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from leadflow.intake.tracking.model import RateLimit


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by name (`ip:…`, `key:…`); the least recently used are forgotten beyond `max_buckets`
    (a forgotten bucket starts full again, which only ever errs towards letting a request through)."""

    def __init__(self, clock: Callable[[], float], max_buckets: int = 100_000) -> None:
        self._clock, self._max = clock, max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, name: str, limit: RateLimit) -> float:
        """0 when a token was taken for this request, else the seconds until one will be available."""
        rate = limit.per_minute / 60.0
        with self._lock:
            now = self._clock()
            bucket = self._buckets.pop(name, None) or _Bucket(float(limit.burst), now)
            bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            self._buckets[name] = bucket
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
