"""Limiters shared by every process and node through Redis (``NEXMDM_REDIS_URL``).

Each decision is one Lua script run atomically by Redis, on Redis's clock (``TIME``), so several nodes
with skewed clocks still count one window. When Redis cannot be reached the API keeps serving: the
decision falls back to the process's own limiter (:mod:`nexmdm_api.ratelimit`), which is what a single
node does anyway; a request with valid credentials is never refused because Redis is down. The outage is
logged once (and its end once), counted in ``nexmdm_redis_fallbacks_total``, and Redis is tried again
after ``RETRY_AFTER_SECONDS`` rather than on every request (the limiter runs on the event loop before a
request's body is read, so it must never wait on a dead server at every call).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nexmdm_api import metrics
from nexmdm_api.ratelimit import FailureLimiter, TokenBucket

logger = logging.getLogger("nexmdm.api")

T = TypeVar("T")

#: how long one Redis call may take (connect or answer) before the local limiter decides instead
REDIS_TIMEOUT_SECONDS = 0.25
#: after a failed call, decide locally for this long before trying Redis again
RETRY_AFTER_SECONDS = 5.0

_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS[1]: a sorted set of failure times; ARGV: window ms, limit, a unique member.
# The first ``limit`` failures in the window pass (-1); after that the wait in ms until one leaves it.
_FAIL = (
    _NOW_MS
    + """
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
if n <= limit then return '-1' end
if n > limit + 1 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - limit - 2) end
local oldest = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
return tostring(math.max(tonumber(oldest[2]) + window - now, 1000))
"""
)

# KEYS[1]: the same set; ARGV: window ms, limit. Blocked (the wait in ms) once ``limit`` failures are in it.
_RETRY_AFTER = (
    _NOW_MS
    + """
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then return '-1' end
local oldest = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait <= 0 then return '-1' end
return tostring(wait)
"""
)

# KEYS[1]: a hash {t: tokens, ts: ms}; ARGV: tokens per ms, burst. -1 when a token was taken, else the wait in ms.
_TAKE = (
    _NOW_MS
    + """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, last = tonumber(v[1]) or burst, tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = -1
if tokens < 1 then wait = (1 - tokens) / rate else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return tostring(wait)
"""
)


class RedisLink:
    """Redis clients for one process (a blocking one for handlers in worker threads, an asyncio one for
    handlers on the event loop), with the fallback bookkeeping shared by its limiters."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis
        import redis.asyncio

        self.prefix = prefix
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        options: dict[str, Any] = {
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "retry_on_timeout": False,
            "decode_responses": True,
        }
        self.client = redis.Redis.from_url(url, **options)
        self.aclient = redis.asyncio.Redis.from_url(url, **options)
        self._scripts: dict[tuple[str, bool], Any] = {}
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()

    def script(self, source: str) -> Any:
        return self._script(source, asynchronous=False)

    def ascript(self, source: str) -> Any:
        return self._script(source, asynchronous=True)

    def _script(self, source: str, *, asynchronous: bool) -> Any:
        script = self._scripts.get((source, asynchronous))
        if script is None:
            client = self.aclient if asynchronous else self.client
            script = self._scripts[(source, asynchronous)] = client.register_script(source)
        return script

    def _skip(self) -> bool:
        return self._down and time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            first = not self._down
            self._down = True
        if first:
            logger.warning(
                "redis_unavailable error=%s: rate limits are per process until it answers again",
                exc.__class__.__name__,
            )

    def _answered(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                logger.warning("redis_available: rate limits are shared again")

    def run(self, limiter: str, remote: Callable[[], T], local: Callable[[], T]) -> T:
        """``remote()`` through Redis; ``local()`` while Redis is unreachable (logged once, counted)."""
        if self._skip():
            metrics.count_redis_fallback(limiter)
            return local()
        try:
            result = remote()
        except self.errors as exc:
            self._failed(exc)
            metrics.count_redis_fallback(limiter)
            return local()
        self._answered()
        return result

    async def run_async(self, limiter: str, remote: Callable[[], Awaitable[T]], local: Callable[[], T]) -> T:
        """:meth:`run` for the event loop: waiting on Redis never blocks other requests."""
        if self._skip():
            metrics.count_redis_fallback(limiter)
            return local()
        try:
            result = await remote()
        except self.errors as exc:
            self._failed(exc)
            metrics.count_redis_fallback(limiter)
            return local()
        self._answered()
        return result

    async def close(self) -> None:
        self.client.close()
        await self.aclient.aclose()


def _seconds(reply: Any) -> float | None:
    value = float(reply)
    return None if value < 0 else value / 1000.0


class SharedFailureLimiter(FailureLimiter):
    """:class:`FailureLimiter` counted in Redis; the in-process counts are the fallback."""

    def __init__(self, link: RedisLink, limit: int, window: float) -> None:
        super().__init__(limit, window)
        self.link = link

    def _key(self, key: str) -> list[str]:
        return [f"{self.link.prefix}auth:{key}"]

    def retry_after(self, key: str, now: float | None = None) -> float | None:
        if not self.enabled or now is not None:
            return super().retry_after(key, now)
        window_ms = int(self.window * 1000)
        return self.link.run(
            "auth",
            lambda: _seconds(self.link.script(_RETRY_AFTER)(keys=self._key(key), args=[window_ms, self.limit])),
            lambda: super(SharedFailureLimiter, self).retry_after(key),
        )

    def fail(self, key: str, now: float | None = None) -> float | None:
        if not self.enabled or now is not None:
            return super().fail(key, now)
        window_ms = int(self.window * 1000)
        # the local count keeps up too, so that a fallback does not start from zero
        local = super().fail(key)
        remote = self.link.run(
            "auth",
            lambda: _seconds(
                self.link.script(_FAIL)(keys=self._key(key), args=[window_ms, self.limit, uuid.uuid4().hex])
            ),
            lambda: local,
        )
        return remote


class SharedTokenBucket(TokenBucket):
    """:class:`TokenBucket` kept in Redis; the in-process buckets are the fallback."""

    def __init__(self, link: RedisLink, rate_per_minute: float, burst: int) -> None:
        super().__init__(rate_per_minute, burst)
        self.link = link

    def take(self, key: str, now: float | None = None) -> float | None:
        if self.rate <= 0 or now is not None:
            return super().take(key, now)
        rate_per_ms = self.rate / 1000.0
        return self.link.run(
            "heartbeat",
            lambda: _seconds(
                self.link.script(_TAKE)(keys=[f"{self.link.prefix}hb:{key}"], args=[repr(rate_per_ms), self.burst])
            ),
            lambda: super(SharedTokenBucket, self).take(key),
        )

    async def take_async(self, key: str) -> float | None:
        if self.rate <= 0:
            return None
        rate_per_ms = self.rate / 1000.0

        async def remote() -> float | None:
            script = self.link.ascript(_TAKE)
            return _seconds(await script(keys=[f"{self.link.prefix}hb:{key}"], args=[repr(rate_per_ms), self.burst]))

        return await self.link.run_async("heartbeat", remote, lambda: super(SharedTokenBucket, self).take(key))
