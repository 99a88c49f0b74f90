"""The delivery worker: a transactional outbox for command pushes, sent from one asyncio loop.

The API commits a ``pending`` dispatch and returns. A worker claims up to ``delivery_batch_size`` due
rows with a lease in one short transaction (``UPDATE ... RETURNING``; ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several workers never claim one row), commits, sends them through FCM with up to
``delivery_concurrency`` requests in flight without holding any lock, and records the outcomes in
batches (one statement each) only on rows whose lease it still owns. The next batch is claimed while the
last sends of this one are in flight, so the sender never runs dry. A worker that dies after claiming
loses nothing: its lease runs out and another round claims the rows again. Pushes are at least once; the
record is exactly once.

The database work runs in threads (SQLAlchemy sessions are synchronous), the sends in the worker's own
event loop, which lives in the thread that calls :meth:`DeliveryWorker.run` or :meth:`run_once`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import DatabaseUnavailable
from core.base.settings import Settings
from core.commands.push import fcm, queue
from core.commands.push.queue import Claim, Decision
from core.commands.push.sender import RateGate, Sender
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.delivery")

#: outcomes are stored once this many have accumulated in a round (or the round ends, or a second passed)
RECORD_BATCH = 250
RECORD_EVERY_SECONDS = 1.0
#: rounds in flight at once: the ones sending and the next, claimed before the sender runs dry
MAX_ROUNDS = 3

#: called with (outcome, push latency in seconds or None) after each recorded outcome
Observer = Callable[[str, float | None], None]


class DeliveryWorker:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        client: fcm.FcmClient | None,
        *,
        observer: Observer | None = None,
        rng: Callable[[], float] = random.random,
        limiter: RateGate | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.client = client
        self.observer = observer
        self.rng = rng
        self.totals: Counter[str] = Counter()
        #: the FCM rate cap: ``None`` for this process's own, or ``core.commands.push.ratecap.rate_gate(settings)``
        self.limiter = limiter
        self.sender = Sender(client, settings, rng, limiter=limiter) if client is not None else None
        self._loop = _new_loop()

    # ------------------------------------------------------------------------------ claim, record

    def claim(self, now: datetime | None = None) -> list[Claim]:
        """Lease up to ``delivery_batch_size`` due rows in one short transaction."""
        with self.session_factory.begin() as db:
            return queue.claim(db, self.settings, now=now or utcnow(), limit=self.claim_limit)

    @property
    def claim_limit(self) -> int:
        """``delivery_batch_size``, but never more than the rate cap lets us send within half a lease."""
        per_lease = self.settings.fcm_max_per_minute / 60 * self.settings.delivery_lease_seconds / 2
        return max(1, min(self.settings.delivery_batch_size, int(per_lease)))

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (50-100 % of the step), never sooner than ``Retry-After``."""
        step = min(self.settings.fcm_backoff_max_seconds, self.settings.fcm_backoff_seconds * 2.0 ** (attempts - 1))
        delay = step * (0.5 + self.rng() / 2)
        return max(delay, retry_after or 0.0)

    def decide(self, claim: Claim, result: fcm.SendResult, now: datetime) -> Decision:
        """The columns to store for one send's outcome."""
        outcome = result.outcome
        # every outcome sets the same columns, so a batch is one statement with one value list per column
        values: dict[str, Any] = {
            "last_error": result.error,
            "fcm_status": "pending",
            "sent_at": None,
            "fcm_message_id": None,
            "next_attempt_at": None,
        }
        if outcome == fcm.SENT:
            values |= {"fcm_status": "sent", "sent_at": now, "fcm_message_id": result.message_id}
        elif outcome == "skipped":
            values |= {"fcm_status": "skipped"}
        elif outcome == fcm.RETRY and claim.attempts < self.settings.fcm_max_attempts:
            delay = self.backoff(claim.attempts, result.retry_after)
            values |= {"next_attempt_at": now + timedelta(seconds=delay)}
        else:
            values |= {"fcm_status": "failed"}
            if outcome == fcm.RETRY:
                outcome = "gave_up"
        return Decision(claim, values, outcome)

    def record_batch(self, items: list[tuple[Claim, fcm.SendResult]], now: datetime | None = None) -> list[str]:
        """Store outcomes of one claim in one statement, where the lease is still ours; returns them."""
        now = now or utcnow()
        decisions = [self.decide(c, r, now) for c, r in items]
        with self.session_factory.begin() as db:
            owned = queue.record(db, decisions, now)
        outcomes = []
        for d in decisions:
            outcome = d.outcome if d.claim.id in owned else "lease_lost"
            self._report(d.claim, outcome, now)
            outcomes.append(outcome)
        return outcomes

    def record(self, claim: Claim, result: fcm.SendResult, now: datetime | None = None) -> str:
        """Store one send's outcome if this worker still owns the lease; returns the recorded outcome."""
        return self.record_batch([(claim, result)], now)[0]

    def _report(self, claim: Claim, outcome: str, now: datetime) -> None:
        self.totals[outcome] += 1
        latency = (now - claim.created_at).total_seconds() if outcome == fcm.SENT else None
        if self.observer is not None:
            self.observer(outcome, latency)
        if outcome == "lease_lost":
            logger.warning("lease on %s ran out before its outcome was recorded", claim.request_id)
            return
        if outcome in (fcm.UNREGISTERED, fcm.INVALID, fcm.AUTH, "gave_up"):
            log = logger.warning
        elif logger.isEnabledFor(logging.DEBUG):
            log = logger.debug  # one line per push is too many at 5,000 pushes a second
        else:
            return
        log(
            "push request_id=%s device_id=%s outcome=%s attempts=%d",
            claim.request_id,
            claim.device_id,
            outcome,
            claim.attempts,
        )

    # ------------------------------------------------------------------------------------- send

    async def _send(self, claim: Claim) -> fcm.SendResult | None:
        if self.sender is None:
            return fcm.SendResult("skipped", error="FCM is not configured")
        try:
            return await self.sender.send(claim)
        except Exception as exc:  # one bad send must not stop the worker
            logger.exception("push of %s failed unexpectedly", claim.request_id)
            return fcm.SendResult(fcm.RETRY, error=f"unexpected: {exc.__class__.__name__}")

    async def _store(self, items: list[tuple[Claim, fcm.SendResult]]) -> list[str]:
        try:
            return await asyncio.to_thread(self.record_batch, items)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            # the rows keep their lease until it runs out, then another round sends them again
            logger.warning("could not record %d push outcomes: %s", len(items), str(exc).splitlines()[0])
            return ["unrecorded"] * len(items)

    async def deliver(self, claims: list[Claim]) -> list[str]:
        """Send one claimed batch concurrently; store outcomes in batches as they come in."""
        tasks = [asyncio.ensure_future(self._send(c)) for c in claims]
        by_task = dict(zip(tasks, claims, strict=True))
        outcomes: list[str] = []
        ready: list[tuple[Claim, fcm.SendResult]] = []
        since = time.monotonic()
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=RECORD_EVERY_SECONDS)
                for task in done:
                    result = task.result()
                    if result is None:
                        outcomes.append("lease_lost")
                        self.totals["lease_lost"] += 1
                    else:
                        ready.append((by_task[task], result))
                due = time.monotonic() - since >= RECORD_EVERY_SECONDS
                if ready and (len(ready) >= RECORD_BATCH or not pending or due):
                    outcomes += await self._store(ready)
                    ready, since = [], time.monotonic()
        finally:
            for task in pending:  # cancelled (the worker stops): unsent rows go back when their lease ends
                task.cancel()
        return outcomes

    # -------------------------------------------------------------------------------------- run

    def run_once(self, now: datetime | None = None) -> list[str]:
        """Claim one batch (due at ``now``) and deliver it; returns the outcomes."""
        return self.send_claims(self.claim(now))

    def send_claims(self, claims: list[Claim]) -> list[str]:
        """Send already claimed rows from this thread and record their outcomes; returns them."""
        if not claims:
            return []
        return self._loop.run_until_complete(self.deliver(claims))

    def sweep_expired(self, now: datetime | None = None) -> int:
        """Mark commands with no acknowledgement within the TTL as ``expired``."""
        return queue.sweep_expired(self.session_factory, self.settings, now)

    def run(self, stop: threading.Event, *, sweep_every: float = 30.0) -> None:
        """Deliver until ``stop`` is set; database outages are waited out, not fatal."""
        self._loop.run_until_complete(self._run(stop, sweep_every))

    async def _run(self, stop: threading.Event, sweep_every: float) -> None:
        rounds: set[asyncio.Future[list[str]]] = set()
        last_sweep = 0.0
        failures = 0
        while not stop.is_set():
            claimed = 0
            try:
                if time.monotonic() - last_sweep >= sweep_every:
                    await asyncio.to_thread(self.sweep_expired)
                    last_sweep = time.monotonic()
                if self.sender is not None and (pause := self.sender.paused_for()) > 0:
                    await asyncio.sleep(min(pause, 0.5))  # no claim while FCM asked us to wait
                    continue
                waiting = self.sender.waiting if self.sender is not None else 0
                if len(rounds) < MAX_ROUNDS and waiting < self.settings.delivery_concurrency:
                    claims = await asyncio.to_thread(self.claim)
                    claimed = len(claims)
                    if claims:
                        rounds.add(asyncio.ensure_future(self.deliver(claims)))
                failures = 0
            except (SQLAlchemyError, DatabaseUnavailable) as exc:
                failures += 1
                logger.warning("delivery worker cannot use the database: %s", str(exc).splitlines()[0])
                await self._idle(stop, rounds, min(5.0, 0.25 * 2**failures))  # back soon after it returns
                continue
            except Exception:  # a bug must not silently end pushes for this process: log, wait, go on
                failures += 1
                logger.exception("delivery worker round failed")
                await self._idle(stop, rounds, min(5.0, 0.25 * 2**failures))
                continue
            if claimed >= self.claim_limit:
                await self._idle(stop, rounds, 0.005)  # more is due: claim again once the sender has room
            else:
                await self._idle(stop, rounds, self.settings.delivery_poll_seconds)
        if rounds:  # let sends in flight finish and be recorded; a long pause is not waited out
            _, late = await asyncio.wait(rounds, timeout=self.settings.fcm_timeout_seconds + 1)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _idle(self, stop: threading.Event, rounds: set[asyncio.Future[list[str]]], seconds: float) -> None:
        """Wait up to ``seconds``, waking early when a round finishes or ``stop`` is set."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if rounds:
                done, _ = await asyncio.wait(rounds, timeout=min(left, 0.1), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    rounds.discard(task)
                    if task.exception() is not None:
                        logger.error("delivery round failed: %r", task.exception())
                if done:
                    break
            else:
                await asyncio.sleep(min(left, 0.1))

    def close(self) -> None:
        """Close the HTTP session and the loop (from any thread, even one running another loop)."""

        def finish() -> None:
            if self.client is not None:
                self._loop.run_until_complete(self.client.aclose())
            closer = getattr(self.limiter, "aclose", None)
            if closer is not None:  # a shared gate's Redis connections belong to this loop
                self._loop.run_until_complete(closer())
            self._loop.close()

        closer = threading.Thread(target=finish, name="nexmdm-delivery-close")
        closer.start()
        closer.join()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (uvicorn[standard] brings it): about a third less CPU per push."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or a slim install
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def client_from_settings(settings: Settings) -> fcm.FcmClient | None:
    """An FCM client when credentials are configured, else ``None`` (the worker stays off)."""
    if not settings.fcm_credentials:
        return None
    return fcm.FcmClient(
        settings.fcm_credentials,
        project_id=settings.fcm_project_id,
        endpoint=settings.fcm_endpoint,
        timeout=settings.fcm_timeout_seconds,
        connections=settings.delivery_concurrency,
    )
