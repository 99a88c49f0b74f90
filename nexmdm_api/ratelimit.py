"""In-process rate limiters: failed authentications per client address, heartbeats per device.

Both live on ``app.state`` (one per worker process), so with ``--workers N`` each worker counts on its
own: the effective limits are up to N times the configured ones. ``docs/api.md`` says so.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class FailureLimiter:
    """A sliding window of failures per key: ``limit`` failures within ``window`` seconds block the key.

    The contract's count: the first ``limit`` failures are answered 401, the next one (and every one
    after it while ``limit`` failures stay in the window) 429.
    """

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
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
            failures = self._failures.get(key)
            if failures is None:
                if len(self._failures) >= self.max_keys:
                    self._prune(now)
                failures = self._failures[key] = deque(maxlen=self.limit + 1)
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            failures.append(now)
            if len(failures) <= self.limit:
                return None  # the first ``limit`` failures are plain 401s
            return max(failures[-self.limit] + self.window - now, 1.0)

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window]:
            del self._failures[key]
        while len(self._failures) >= self.max_keys:  # still full: forget the oldest keys
            self._failures.pop(next(iter(self._failures)))


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
