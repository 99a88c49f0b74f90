"""``fcm_status`` of finished commands: ``skipped`` when no push was (or will be) sent, on both databases.

A command acked, failed or expired before any push is ``skipped``, never ``pending`` (finished commands
are never claimed again); a push in flight when the command finishes keeps the outcome its worker records;
ack latency is measured from creation, pushed or not.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.base.statuses import FINISHED_STATUSES
from core.commands import dispatches
from core.commands.push import DeliveryWorker, client_from_settings, fcm, sweep_expired
from core.models import Device, FcmDispatch
from core.storage.types import utcnow
from tests.support.fakes.fcm import FakeFcm, write_service_account


def _setup(factory: sessionmaker[Session], settings: Settings, *request_ids: str) -> None:
    with factory.begin() as db:
        db.add(Device(id="dev_1", fcm_token="fcm-token-1"))
    for request_id in request_ids:
        with factory.begin() as db:
            dispatches.create_command(
                db, settings, request_id=request_id, device_id="dev_1", action="ring", payload={"seconds": 5}
            )


def _status(factory: sessionmaker[Session], request_id: str) -> tuple[str, str]:
    with factory() as db:
        row = db.execute(select(FcmDispatch).where(FcmDispatch.request_id == request_id)).scalar_one()
        return row.status, row.fcm_status


def _ack(factory: sessionmaker[Session], request_id: str, status: str = "completed") -> None:
    with factory.begin() as db:
        dispatches.ack_command(db, device_id="dev_1", request_id=request_id, status=status)


def test_acked_failed_or_expired_before_any_push_is_skipped(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _setup(session_factory, settings, "acked", "failed", "expired", "still")
    _ack(session_factory, "acked")
    _ack(session_factory, "failed", "failed")
    with session_factory.begin() as db:  # created long ago: the sweep expires it
        db.execute(
            FcmDispatch.__table__.update()
            .where(FcmDispatch.request_id == "expired")
            .values(created_at=utcnow() - timedelta(days=30))
        )
    assert sweep_expired(session_factory, settings) == 1
    assert _status(session_factory, "acked") == ("acked", "skipped")
    assert _status(session_factory, "failed") == ("failed", "skipped")
    assert _status(session_factory, "expired") == ("expired", "skipped")
    assert _status(session_factory, "still") == ("pending", "pending")  # a pending command may still be pushed
    assert set(FINISHED_STATUSES) >= {"acked", "failed", "expired"}

    with session_factory() as db:
        stats = dispatches.dispatch_stats(db)
    assert stats["by_fcm_status"] == {"skipped": 3, "pending": 1}  # no finished command "waits for a push"
    assert stats["push_latency_ms"]["count"] == 0
    assert stats["ack_latency_ms"]["count"] == 2  # from creation, although nothing was pushed
    assert stats["ack_latency_ms"]["p50"] is not None and stats["ack_latency_ms"]["p50"] >= 0


@pytest.fixture
def worker(
    session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm, tmp_path: Path
) -> DeliveryWorker:
    key = write_service_account(tmp_path / "service-account.json", f"{fake_fcm.url}/token")
    fcm_settings = settings.with_overrides(fcm_credentials=key, fcm_endpoint=fake_fcm.url, fcm_backoff_seconds=1.0)
    return DeliveryWorker(session_factory, fcm_settings, client_from_settings(fcm_settings), rng=lambda: 0.5)


def test_a_push_in_flight_keeps_its_outcome(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _setup(session_factory, settings, "sent", "retried")
    claims = {c.request_id: c for c in worker.claim()}
    _ack(session_factory, "sent")  # the device polled and acked while the push was on its way
    _ack(session_factory, "retried")
    assert _status(session_factory, "sent") == ("acked", "pending")  # the worker owns the outcome
    assert worker.record(claims["sent"], fcm.SendResult(fcm.SENT, message_id="m/1")) == fcm.SENT
    assert worker.record(claims["retried"], fcm.SendResult(fcm.RETRY, error="UNAVAILABLE")) == fcm.RETRY
    assert _status(session_factory, "sent") == ("acked", "sent")
    assert _status(session_factory, "retried") == ("acked", "skipped")  # never claimed again: not pending
    worker.close()


def test_a_push_whose_worker_died_is_settled_by_the_sweep(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _setup(session_factory, settings, "orphan")
    worker.claim()  # claimed, then the worker "dies" without recording
    _ack(session_factory, "orphan")
    assert _status(session_factory, "orphan") == ("acked", "pending")
    sweep_expired(session_factory, settings, now=utcnow() + timedelta(seconds=settings.delivery_lease_seconds + 1))
    assert _status(session_factory, "orphan") == ("acked", "skipped")
    worker.close()
