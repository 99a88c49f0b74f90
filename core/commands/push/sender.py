"""The asyncio sender: many pushes in flight, one pause for all of them, a rate cap (``core.commands.push.ratecap``).

FCM answers 429 ``QUOTA_EXCEEDED`` (or 503) when a project sends too fast: then every further send is
held for ``Retry-After`` (or a doubling backoff when FCM gives none) plus up to 20 % jitter, so that
several workers do not resume in lockstep. Sends already in flight finish; their outcomes count as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from core.base.settings import Settings
from core.commands.push import fcm
from core.commands.push.queue import Claim
from core.commands.push.ratecap import rate_limiter
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.delivery")

#: a claim whose lease ends sooner than this is not sent: another worker may take it at any moment
LEASE_MARGIN_SECONDS = 1.0


class RateGate(Protocol):
    """What the sender waits on before each send: ``aiolimiter.AsyncLimiter`` per process, or
    :class:`core.commands.push.ratecap.SharedRateGate` (a Redis bucket: the cap holds across every sender)."""

    async def acquire(self, amount: float = 1) -> None: ...


def android_config(claim: Claim, settings: Settings, now: datetime) -> dict[str, Any]:
    """FCM's AndroidConfig for a command: collapse by action, live as long as the command, wake only if needed.

    With ``collapse_key`` = action a device offline for hours gets one ``sync``, not ten; the agent
    fetches ``GET /v1/commands/pending`` on any push, so a collapsed push loses no command.
    """
    remaining = max(0, int((claim.expires_at - now).total_seconds()))
    priority = "high" if claim.action in settings.fcm_high_priority_actions else "normal"
    return {"collapse_key": claim.action, "ttl": f"{remaining}s", "priority": priority}


class Sender:
    """Sends claims through one :class:`core.commands.push.fcm.FcmClient`, at most ``delivery_concurrency`` at once."""

    def __init__(
        self,
        client: fcm.FcmClient,
        settings: Settings,
        rng: Callable[[], float],
        *,
        clock: Callable[[], float] = time.monotonic,
        limiter: RateGate | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.rng = rng
        self.clock = clock
        self.paused_until = 0.0
        self.pauses = 0
        self._consecutive_pauses = 0
        self._waiting = 0
        self._semaphore: asyncio.Semaphore | None = None
        #: the rate cap; by default NEXMDM_FCM_MAX_PER_MINUTE for this process alone (ratecap.rate_gate: shared)
        self._limiter: RateGate | None = limiter

    @property
    def waiting(self) -> int:
        """Claims handed to the sender whose send has not started yet."""
        return self._waiting

    def paused_for(self) -> float:
        return max(0.0, self.paused_until - self.clock())

    def pause(self, retry_after: float | None) -> None:
        """Hold every send for ``retry_after`` (else a doubling backoff), plus up to 20 % jitter."""
        self._consecutive_pauses += 1
        base = retry_after
        if base is None:
            base = min(
                self.settings.fcm_backoff_max_seconds,
                self.settings.fcm_backoff_seconds * 2.0 ** (self._consecutive_pauses - 1),
            )
        until = self.clock() + base * (1 + 0.2 * self.rng())
        if until > self.paused_until:
            self.paused_until = until
            self.pauses += 1
            logger.warning("FCM asked us to slow down: every send paused for %.1f s", until - self.clock())

    async def _ready(self) -> None:
        """Wait out a pause and the rate cap (a pause may begin while waiting for the cap)."""
        if self._limiter is None:
            self._limiter = rate_limiter(self.settings.fcm_max_per_minute)
        while True:
            if (wait := self.paused_for()) > 0:
                await asyncio.sleep(wait)
                continue
            await self._limiter.acquire()
            if self.paused_for() <= 0:
                return

    async def send(self, claim: Claim) -> fcm.SendResult | None:
        """Push one claim; ``None`` when its lease ran out while it waited (it is not sent, nor recorded)."""
        if not claim.fcm_token:
            return fcm.SendResult("skipped")
        now = utcnow()
        if claim.expires_at <= now:
            return fcm.SendResult("skipped", error="the command expired before its push")
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.delivery_concurrency)
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        try:
            await self._ready()
            now = utcnow()
            if (claim.lease_until - now).total_seconds() < LEASE_MARGIN_SECONDS:
                return None
            data = {"request_id": claim.request_id, "action": claim.action}
            android = android_config(claim, self.settings, now)
            result = await self.client.send(token=claim.fcm_token, data=data, android=android)
            if result.outcome == fcm.AUTH:
                logger.warning("FCM refused our credentials (%s); refreshing them once", result.error)
                await self._ready()  # the second request counts against the cap too
                if (claim.lease_until - utcnow()).total_seconds() < LEASE_MARGIN_SECONDS:
                    return None  # the wait outlasted our lease: another worker may hold the row now
                result = await self.client.send(token=claim.fcm_token, data=data, android=android, force_refresh=True)
                if result.outcome == fcm.AUTH:
                    logger.error("FCM authentication failed after a refresh: %s", result.error)
            if result.pause:
                self.pause(result.retry_after)
            elif result.outcome == fcm.SENT:
                self._consecutive_pauses = 0
            return result
        finally:
            self._semaphore.release()
