"""In-process rate limiters: failed authentications per client address, heartbeats per device.

Addresses are keyed by :func:`client_key`: an IPv4 address, or the /64 network of an IPv6 one (a single
host usually holds a whole /64, so keying by address would let it rotate through 2^64 of them).

Both live on ``app.state`` (one per worker process). Without Redis each worker counts on its own: the
effective limits are up to N times the configured ones across N processes. With ``NEXMDM_REDIS_URL``
the subclasses in :mod:`nexmdm_api.shared_limits` count in Redis, across every process and node, and
fall back to these when Redis is unreachable.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque


def client_key(host: str) -> str:
    """The limiter's key for a client address: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as IPv4)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureLimiter:
    """A sliding window of failures per key: ``limit`` failures within ``window`` seconds block the key.

    The contract's count: the first ``limit`` failures are answered 401, the next one (and every one
    after it while ``limit`` failures stay in the window) 429.
    """

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        #: ordered by last failure, oldest first (a key moves to the end at each failure), so that expired
        #: keys are always at the front: eviction looks at the front only, O(1) per key evicted
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def retry_after(self, key: str, now: float | None = None) -> float | None:
        """Seconds until ``key`` may try again, or ``None`` when it is not blocked."""
        if not self.enabled:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.get(key)
            if failures is None or len(failures) < self.limit:
                return None
            wait = failures[-self.limit] + self.window - now  # until fewer than ``limit`` remain
            return wait if wait > 0 else None

    def fail(self, key: str, now: float | None = None) -> float | None:
        """Record a failure; returns the wait when the key is now blocked."""
        if not self.enabled:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.pop(key, None)  # re-inserted below: the newest failure goes last
            if failures is None:
                self._evict(now)
                failures = deque(maxlen=self.limit + 1)
            self._failures[key] = failures
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            failures.append(now)
            if len(failures) <= self.limit:
                return None  # the first ``limit`` failures are plain 401s
            return max(failures[-self.limit] + self.window - now, 1.0)

    async def retry_after_async(self, key: str) -> float | None:
        """:meth:`retry_after` for code on the event loop (in memory: nothing to wait for)."""
        return self.retry_after(key)

    async def fail_async(self, key: str) -> float | None:
        """:meth:`fail` for code on the event loop (in memory: nothing to wait for)."""
        return self.fail(key)

    def _evict(self, now: float) -> None:
        """Forget keys whose last failure left the window, and the least recently failing ones while full.

        Both are at the front of the dict: each step is O(1) and each key is evicted once, so a request
        never scans the tracked keys (it did: 8 ms per new address at 100,000 addresses).
        """
        while self._failures:
            oldest = next(iter(self._failures))
            if len(self._failures) < self.max_keys and self._failures[oldest][-1] > now - self.window:
                return
            del self._failures[oldest]


class TokenBucket:
    """Per-key token buckets: ``rate_per_minute`` sustained, ``burst`` at once."""

    def __init__(self, rate_per_minute: float, burst: int, *, max_keys: int = 200_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float | None:
        """Take one token; returns ``None`` when allowed, else the seconds until a token is available."""
        if self.rate <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            if key not in self._buckets and len(self._buckets) >= self.max_keys:
                # full (say, a flood of made-up tokens): forget the least recently seen tenth, not everyone
                for old in list(self._buckets)[: max(1, self.max_keys // 10)]:
                    del self._buckets[old]
            self._buckets.pop(key, None)  # re-insert: the dict's order is least recently seen first
            self._buckets[key] = (tokens - 1.0, now)
            return None

    async def take_async(self, key: str) -> float | None:
        """:meth:`take` for handlers on the event loop (in memory: nothing to wait for)."""
        return self.take(key)
