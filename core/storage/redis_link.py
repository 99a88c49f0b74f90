"""One process's link to Redis (``NEXMDM_REDIS_URL``) for counters shared by every process and node.

Each shared decision is one Lua script run atomically by Redis, on Redis's clock (``TIME``), so several
nodes with skewed clocks still count one window. When Redis cannot be reached the caller decides with its
own per-process state instead (:meth:`RedisLink.run`): the outage is logged once (and its end once),
reported to ``on_fallback`` (the API counts ``nexmdm_redis_fallbacks_total``), and Redis is tried again
after ``RETRY_AFTER_SECONDS`` rather than at every call, so that nothing waits on a dead server each time.

Used by the API's limiters (``nexmdm_api.shared_limits``) and by the delivery workers' cluster-wide FCM
rate cap (``core.commands.push.ratecap``), in ``nexmdm serve`` and ``nexmdm worker`` alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: how long one Redis call may take (connect or answer) before the local limiter decides instead
REDIS_TIMEOUT_SECONDS = 0.25
#: after a failed call, decide locally for this long before trying Redis again
RETRY_AFTER_SECONDS = 5.0

#: the first line of every script: ``now`` in milliseconds on Redis's clock
NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"


class RedisLink:
    """Redis clients for one process (a blocking one for code in threads, an asyncio one for code on an
    event loop), with the fallback bookkeeping shared by every limiter that uses it.

    The asyncio client belongs to the first event loop that uses it: a component running its own loop
    (the delivery worker) makes its own link.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        on_fallback: Callable[[str], None] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        import redis
        import redis.asyncio

        self.prefix = prefix
        self.on_fallback = on_fallback
        self.log = log or logging.getLogger("nexmdm.redis")
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
        #: decisions taken locally because Redis could not be reached
        self.fallbacks = 0

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

    @property
    def down(self) -> bool:
        """Is Redis being skipped (a call failed less than ``RETRY_AFTER_SECONDS`` ago)?"""
        return self._down and time.monotonic() < self._down_until

    def _fell_back(self, limiter: str) -> None:
        self.fallbacks += 1
        if self.on_fallback is not None:
            self.on_fallback(limiter)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            first = not self._down
            self._down = True
        if first:
            self.log.warning(
                "redis_unavailable error=%s: rate limits are per process until it answers again",
                exc.__class__.__name__,
            )

    def _answered(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                self.log.warning("redis_available: rate limits are shared again")

    def run(self, limiter: str, remote: Callable[[], T], local: Callable[[], T]) -> T:
        """``remote()`` through Redis; ``local()`` while Redis is unreachable (logged once, counted)."""
        if self.down:
            self._fell_back(limiter)
            return local()
        try:
            result = remote()
        except self.errors as exc:
            self._failed(exc)
            self._fell_back(limiter)
            return local()
        self._answered()
        return result

    async def run_async(self, limiter: str, remote: Callable[[], Awaitable[T]], local: Callable[[], T]) -> T:
        """:meth:`run` for the event loop: waiting on Redis never blocks other work of the loop."""
        if self.down:
            self._fell_back(limiter)
            return local()
        try:
            result = await remote()
        except self.errors as exc:
            self._failed(exc)
            self._fell_back(limiter)
            return local()
        self._answered()
        return result

    async def close(self) -> None:
        self.client.close()
        await self.aclient.aclose()
