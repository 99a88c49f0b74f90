"""The delivery worker: a transactional outbox for command pushes.

The API commits a ``pending`` dispatch and returns. A worker claims due rows with a lease in one short
transaction (``UPDATE ... RETURNING``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers
never claim one row), commits, sends through FCM without holding any lock, and records the outcome only
while it still owns the lease. A worker that dies after claiming loses nothing: its lease runs out and
another round claims the row again. Pushes are at least once; the record is exactly once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core import fcm
from core.errors import DatabaseUnavailable
from core.models import FINISHED_STATUSES, Device, FcmDispatch
from core.operations import rowcount
from core.settings import Settings
from core.types import utcnow

logger = logging.getLogger("nexmdm.delivery")


@dataclass(frozen=True)
class Claim:
    id: int
    request_id: str
    device_id: str
    action: str
    attempts: int
    lease_until: datetime
    created_at: datetime
    fcm_token: str | None


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
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.client = client
        self.observer = observer
        self.rng = rng
        self.totals: Counter[str] = Counter()
        self._pool = ThreadPoolExecutor(max_workers=settings.delivery_concurrency, thread_name_prefix="fcm-send")

    # ------------------------------------------------------------------------------------ claim

    def claim(self, now: datetime | None = None) -> list[Claim]:
        """Lease up to ``delivery_batch_size`` due rows in one short transaction."""
        now = now or utcnow()
        lease = now + timedelta(seconds=self.settings.delivery_lease_seconds)
        due = (
            select(FcmDispatch.id)
            .where(
                FcmDispatch.status == "pending",
                FcmDispatch.fcm_status == "pending",
                or_(FcmDispatch.next_attempt_at.is_(None), FcmDispatch.next_attempt_at <= now),
                or_(FcmDispatch.lease_until.is_(None), FcmDispatch.lease_until < now),
            )
            .order_by(FcmDispatch.id)
            .limit(self.settings.delivery_batch_size)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's BEGIN IMMEDIATE serializes instead
        )
        with self.session_factory.begin() as db:
            rows = db.execute(
                update(FcmDispatch)
                .where(FcmDispatch.id.in_(due.scalar_subquery()))
                .values(lease_until=lease, attempts=FcmDispatch.attempts + 1)
                .returning(
                    FcmDispatch.id,
                    FcmDispatch.request_id,
                    FcmDispatch.device_id,
                    FcmDispatch.action,
                    FcmDispatch.attempts,
                    FcmDispatch.created_at,
                )
                .execution_options(synchronize_session=False)
            ).all()
            if not rows:
                return []
            tokens = dict(
                db.execute(
                    select(Device.id, Device.fcm_token).where(
                        Device.id.in_({r.device_id for r in rows}),
                        Device.fcm_token_dead_at.is_(None),
                        Device.revoked_at.is_(None),
                    )
                ).all()
            )
        return [
            Claim(r.id, r.request_id, r.device_id, r.action, r.attempts, lease, r.created_at, tokens.get(r.device_id))
            for r in sorted(rows, key=lambda r: r.id)
        ]

    # ------------------------------------------------------------------------------------- send

    def _send(self, claim: Claim) -> fcm.SendResult:
        if self.client is None or not claim.fcm_token:
            return fcm.SendResult("skipped", error=None if self.client else "FCM is not configured")
        data = {"request_id": claim.request_id, "action": claim.action}
        result = self.client.send(token=claim.fcm_token, data=data)
        if result.outcome == fcm.AUTH:
            logger.warning("FCM refused our credentials (%s); refreshing them once", result.error)
            result = self.client.send(token=claim.fcm_token, data=data, force_refresh=True)
            if result.outcome == fcm.AUTH:
                logger.error("FCM authentication failed after a refresh: %s", result.error)
        return result

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (50-100 % of the step), never sooner than ``Retry-After``."""
        step = min(self.settings.fcm_backoff_max_seconds, self.settings.fcm_backoff_seconds * 2.0 ** (attempts - 1))
        delay = step * (0.5 + self.rng() / 2)
        return max(delay, retry_after or 0.0)

    def record(self, claim: Claim, result: fcm.SendResult, now: datetime | None = None) -> str:
        """Store a send's outcome if this worker still owns the lease; returns the recorded outcome."""
        now = now or utcnow()
        outcome = result.outcome
        values: dict[str, Any] = {"lease_until": None, "last_error": result.error}
        if outcome == fcm.SENT:
            values |= {"fcm_status": "sent", "sent_at": now, "fcm_message_id": result.message_id}
        elif outcome == "skipped":
            values |= {"fcm_status": "skipped"}
        elif outcome == fcm.RETRY and claim.attempts < self.settings.fcm_max_attempts:
            delay = self.backoff(claim.attempts, result.retry_after)
            # a command that finished meanwhile is never claimed again: its push is skipped, not pending
            still_pending = case((FcmDispatch.status == "pending", FcmDispatch.fcm_status), else_="skipped")
            values |= {"next_attempt_at": now + timedelta(seconds=delay), "fcm_status": still_pending}
        else:
            values |= {"fcm_status": "failed"}
            if outcome == fcm.RETRY:
                outcome = "gave_up"
        with self.session_factory.begin() as db:
            owned = rowcount(
                db.execute(
                    update(FcmDispatch)
                    .where(FcmDispatch.id == claim.id, FcmDispatch.lease_until == claim.lease_until)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
            )
            if owned and outcome == fcm.UNREGISTERED:
                db.execute(
                    update(Device)
                    .where(Device.id == claim.device_id, Device.fcm_token == claim.fcm_token)
                    .values(fcm_token_dead_at=now)
                    .execution_options(synchronize_session=False)
                )
        if not owned:
            logger.warning("lease on %s ran out before its outcome (%s) was recorded", claim.request_id, outcome)
            outcome = "lease_lost"
        latency = (now - claim.created_at).total_seconds() if outcome == fcm.SENT else None
        self.totals[outcome] += 1
        if self.observer is not None:
            self.observer(outcome, latency)
        log = logger.warning if outcome in (fcm.UNREGISTERED, fcm.INVALID, fcm.AUTH, "gave_up") else logger.info
        log(
            "push request_id=%s device_id=%s outcome=%s attempts=%d",
            claim.request_id,
            claim.device_id,
            outcome,
            claim.attempts,
        )
        return outcome

    def _deliver(self, claim: Claim) -> str:
        try:
            result = self._send(claim)
        except Exception as exc:  # one bad send must not stop the worker
            logger.exception("push of %s failed unexpectedly", claim.request_id)
            result = fcm.SendResult(fcm.RETRY, error=f"unexpected: {exc.__class__.__name__}")
        return self.record(claim, result)

    # -------------------------------------------------------------------------------------- run

    def run_once(self, now: datetime | None = None) -> list[str]:
        """Claim one batch (due at ``now``) and deliver it; returns the outcomes."""
        claims = self.claim(now)
        return list(self._pool.map(self._deliver, claims))

    def sweep_expired(self, now: datetime | None = None) -> int:
        """Mark commands with no acknowledgement within the TTL as ``expired``."""
        return sweep_expired(self.session_factory, self.settings, now)

    def run(self, stop: threading.Event, *, sweep_every: float = 30.0) -> None:
        """Deliver until ``stop`` is set; database outages are waited out, not fatal."""
        last_sweep = 0.0
        failures = 0
        while not stop.is_set():
            try:
                if time.monotonic() - last_sweep >= sweep_every:
                    self.sweep_expired()
                    last_sweep = time.monotonic()
                outcomes = self.run_once()
                failures = 0
            except (SQLAlchemyError, DatabaseUnavailable) as exc:
                failures += 1
                logger.warning("delivery worker cannot use the database: %s", str(exc).splitlines()[0])
                stop.wait(min(5.0, 0.25 * 2**failures))  # back soon after the database returns
                continue
            except Exception:  # a bug must not silently end pushes for this process: log, wait, go on
                failures += 1
                logger.exception("delivery worker round failed")
                stop.wait(min(5.0, 0.25 * 2**failures))
                continue
            if len(outcomes) < self.settings.delivery_batch_size:
                stop.wait(self.settings.delivery_poll_seconds)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self.client is not None:
            self.client.close()


def sweep_expired(session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> int:
    """Mark commands with no acknowledgement within ``command_ttl_seconds`` as ``expired``.

    Runs in every server process (with or without FCM) and in every delivery worker.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.command_ttl_seconds)
    with session_factory.begin() as db:
        expired = rowcount(
            db.execute(
                update(FcmDispatch)
                .where(FcmDispatch.status == "pending", FcmDispatch.created_at < cutoff)
                .values(status="expired", finished_at=now, lease_until=None)
                .execution_options(synchronize_session=False)
            )
        )
        # the pushes that will never be sent (their command finished; no worker holds them): skipped
        db.execute(
            update(FcmDispatch)
            .where(
                FcmDispatch.fcm_status == "pending",
                FcmDispatch.status.in_(FINISHED_STATUSES),
                or_(FcmDispatch.lease_until.is_(None), FcmDispatch.lease_until < now),
            )
            .values(fcm_status="skipped")
            .execution_options(synchronize_session=False)
        )
    if expired:
        logger.info("expired %d commands older than %ss", expired, settings.command_ttl_seconds)
    return expired or 0


def queue_stats(db: Session, now: datetime | None = None) -> dict[str, Any]:
    """Depth of the push queue and the age of its oldest row (for metrics)."""
    now = now or utcnow()
    depth, oldest = db.execute(
        select(func.count(), func.min(FcmDispatch.created_at)).where(
            FcmDispatch.status == "pending", FcmDispatch.fcm_status == "pending"
        )
    ).one()
    return {"depth": depth, "oldest_age_seconds": (now - oldest).total_seconds() if oldest else 0.0}


def client_from_settings(settings: Settings) -> fcm.FcmClient | None:
    """An FCM client when credentials are configured, else ``None`` (the worker stays off)."""
    if not settings.fcm_credentials:
        return None
    return fcm.FcmClient(
        settings.fcm_credentials,
        project_id=settings.fcm_project_id,
        endpoint=settings.fcm_endpoint,
        timeout=settings.fcm_timeout_seconds,
    )
