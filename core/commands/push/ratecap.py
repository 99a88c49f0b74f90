"""The FCM rate cap (``NEXMDM_FCM_MAX_PER_MINUTE``): per process, or cluster-wide through Redis.

Without ``NEXMDM_REDIS_URL`` each sender holds the cap on its own (``aiolimiter``), so the docs say to
divide it by the number of senders. With Redis every sender of every node draws from one token bucket
kept in Redis (refilled at the cap, holding at most one second's worth, on Redis's clock). One Lua call
grants a sender a batch of tokens (``GRANT_MAX``, or a quarter of the bucket for small caps) which it
spends locally, so 4,000 pushes a second cost ~80 Redis calls, not 4,000; when the bucket is short of a
batch the sender waits until it is not (a quarter of a second at most from 240 a minute up; below that
a batch is one token and the wait up to 60/cap seconds). Granted tokens not spent within
``GRANT_LIFETIME_SECONDS`` are dropped, so a sender cannot save them up: in any window of ``W`` seconds
the cluster sends at most ``cap/60 × W`` + one second's worth + ``GRANT_MAX`` per sender.

When Redis cannot be reached the sender falls back to its own per-process limiter at once (logged once,
counted as ``nexmdm_redis_fallbacks_total{limiter="fcm"}`` where the process serves ``/metrics``) and
tries Redis again after ``core.storage.redis_link.RETRY_AFTER_SECONDS``: pushes never stop because Redis did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from core.base.settings import Settings
from core.storage.redis_link import NOW_MS, RedisLink

#: the most tokens one Lua call grants a sender
GRANT_MAX = 50
#: granted tokens a sender has not spent after this long are dropped (no saving up beyond the burst)
GRANT_LIFETIME_SECONDS = 1.0

# KEYS[1]: a hash {t: tokens, ts: ms}; ARGV: tokens per ms, burst, tokens wanted.
# Returns {granted, wait in ms}: the whole grant, or none and how long until it is there (at the cap a
# sender waits for a full grant, a quarter second at most, rather than calling again for every token).
_GRANT = (
    NOW_MS
    + """
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, last = tonumber(v[1]) or burst, tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
want = math.min(want, burst)
local n, wait = want, 0
if tokens < want then
  n = 0
  wait = math.ceil((want - tokens) / rate)
else
  tokens = tokens - n
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return {n, wait}
"""
)


def rate_limiter(per_minute: int) -> AsyncLimiter:
    """``per_minute`` sends a minute, in bursts of at most one second's worth (one send below 60 a minute)."""
    if per_minute >= 60:
        return AsyncLimiter(per_minute / 60, 1.0)
    return AsyncLimiter(1, 60 / per_minute)


class SharedRateGate:
    """A :class:`core.commands.push.sender.RateGate` whose tokens come from one bucket in Redis.

    Use it from one event loop (the delivery worker's); its link's asyncio client belongs to that loop.
    """

    def __init__(
        self, link: RedisLink, per_minute: int, *, clock: Callable[[], float] = time.monotonic, grant: int = 0
    ) -> None:
        self.link = link
        self.per_minute = per_minute
        self.rate_per_ms = per_minute / 60_000
        #: one second's worth, as the per-process limiter allows
        self.burst = max(1, per_minute // 60)
        self.grant = grant or max(1, min(GRANT_MAX, self.burst // 4))
        self.key = f"{link.prefix}fcm:rate"
        self.clock = clock
        self.local = rate_limiter(per_minute)  # the fallback while Redis is unreachable
        self._tokens = 0
        self._granted_at = 0.0
        self._lock: asyncio.Lock | None = None
        #: Lua calls made (each grants up to ``grant`` tokens)
        self.calls = 0

    def _take_local(self, amount: int) -> bool:
        if self._tokens and self.clock() - self._granted_at > GRANT_LIFETIME_SECONDS:
            self._tokens = 0  # too old: spending them now could exceed the cap in this second
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    async def _ask(self, want: int) -> tuple[int, float] | None:
        """``(granted, wait seconds)`` from Redis; ``None`` when Redis is unreachable (decide locally)."""

        async def remote() -> tuple[int, float] | None:
            self.calls += 1
            script = self.link.ascript(_GRANT)
            granted, wait_ms = await script(keys=[self.key], args=[repr(self.rate_per_ms), self.burst, want])
            return int(granted), int(wait_ms) / 1000

        return await self.link.run_async("fcm", remote, lambda: None)

    async def acquire(self, amount: float = 1) -> None:
        """Wait until ``amount`` sends are allowed by the cluster-wide cap (or the local one, Redis down)."""
        need = max(1, int(amount))
        if self._lock is None:
            self._lock = asyncio.Lock()
        while not self._take_local(need):
            async with self._lock:  # one Redis call at a time per sender; the others wait for its grant
                if self._take_local(need):
                    return
                answer = await self._ask(max(self.grant, need))
                if answer is not None:
                    granted, wait = answer
                    if granted:
                        if self.clock() - self._granted_at > GRANT_LIFETIME_SECONDS:
                            self._tokens = 0
                        self._tokens += granted
                        self._granted_at = self.clock()
                    else:
                        await asyncio.sleep(wait)
                    continue
            await self.local.acquire(amount)  # Redis unreachable: this process's own cap
            return

    async def aclose(self) -> None:
        await self.link.close()


def rate_gate(settings: Settings, on_fallback: Callable[[str], None] | None = None) -> SharedRateGate | None:
    """The cluster-wide gate when ``NEXMDM_REDIS_URL`` is set, else ``None`` (the sender's own limiter)."""
    if not settings.redis_url:
        return None
    link = RedisLink(settings.redis_url, settings.redis_key_prefix, on_fallback=on_fallback)
    return SharedRateGate(link, settings.fcm_max_per_minute)
