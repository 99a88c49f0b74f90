"""Limiters shared by every process and node through Redis (``NEXMDM_REDIS_URL``).

Each decision is one Lua script run atomically by Redis, on Redis's clock (``TIME``), so several nodes
with skewed clocks still count one window. When Redis cannot be reached the API keeps serving: the
decision falls back to the process's own limiter (:mod:`nexmdm_api.ratelimit`), which is what a single
node does anyway; a request with valid credentials is never refused because Redis is down. The outage is
logged once (and its end once), counted in ``nexmdm_redis_fallbacks_total``, and Redis is tried again
after ``RETRY_AFTER_SECONDS`` rather than on every request (the limiter runs on the event loop before a
request's body is read, so it must never wait on a dead server at every call). The link itself
(:class:`core.storage.redis_link.RedisLink`) lives in ``core``: the delivery workers share the FCM cap through it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from core.storage import redis_link
from core.storage.redis_link import NOW_MS as _NOW_MS
from nexmdm_api import metrics
from nexmdm_api.ratelimit import FailureLimiter, TokenBucket

logger = logging.getLogger("nexmdm.api")


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


class RedisLink(redis_link.RedisLink):
    """The API's link: outages are logged on ``nexmdm.api`` and counted in ``nexmdm_redis_fallbacks_total``."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix, on_fallback=metrics.count_redis_fallback, log=logger)


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

    async def retry_after_async(self, key: str) -> float | None:
        """:meth:`retry_after` through the asyncio client: a stalled Redis never blocks the event loop."""
        if not self.enabled:
            return None
        window_ms = int(self.window * 1000)

        async def remote() -> float | None:
            script = self.link.ascript(_RETRY_AFTER)
            return _seconds(await script(keys=self._key(key), args=[window_ms, self.limit]))

        return await self.link.run_async("auth", remote, lambda: FailureLimiter.retry_after(self, key))

    async def fail_async(self, key: str) -> float | None:
        """:meth:`fail` through the asyncio client."""
        if not self.enabled:
            return None
        window_ms = int(self.window * 1000)
        local = FailureLimiter.fail(self, key)

        async def remote() -> float | None:
            script = self.link.ascript(_FAIL)
            return _seconds(await script(keys=self._key(key), args=[window_ms, self.limit, uuid.uuid4().hex]))

        return await self.link.run_async("auth", remote, lambda: local)


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
