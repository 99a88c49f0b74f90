"""FCM delivery against a fake FCM HTTP v1 + OAuth server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands import dispatches
from core.commands.push import DeliveryWorker, client_from_settings, fcm, queue_stats
from core.models import Device, FcmDispatch
from core.storage.engine import make_engine, make_session_factory
from tests.support.fakes.fcm import FakeFcm, write_service_account


@pytest.fixture
def fcm_settings(settings: Settings, fake_fcm: FakeFcm, tmp_path: Path) -> Settings:
    key = write_service_account(tmp_path / "service-account.json", f"{fake_fcm.url}/token")
    return settings.with_overrides(fcm_credentials=key, fcm_endpoint=fake_fcm.url, fcm_backoff_seconds=1.0)


@pytest.fixture
def worker(session_factory: sessionmaker[Session], fcm_settings: Settings) -> Iterator[DeliveryWorker]:
    factory = make_session_factory(session_factory.kw["bind"], fcm_settings)
    w = DeliveryWorker(factory, fcm_settings, client_from_settings(fcm_settings), rng=lambda: 0.5)
    yield w
    w.close()


def _device(factory: sessionmaker[Session], device_id: str = "dev_1", token: str | None = "fcm-token-1") -> None:
    with factory.begin() as db:
        db.add(Device(id=device_id, fcm_token=token))


def _command(factory: sessionmaker[Session], settings: Settings, request_id: str, device_id: str = "dev_1") -> None:
    with factory.begin() as db:
        dispatches.create_command(
            db, settings, request_id=request_id, device_id=device_id, action="ring", payload={"seconds": 5}
        )


def _row(factory: sessionmaker[Session], request_id: str) -> FcmDispatch:
    with factory() as db:
        return db.execute(select(FcmDispatch).where(FcmDispatch.request_id == request_id)).scalar_one()


def test_accepted_command_is_pushed_once(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_1")
    assert worker.run_once() == ["sent"]
    assert worker.run_once() == []
    assert len(fake_fcm.messages) == 1
    message = fake_fcm.messages[0]
    assert message.body["message"]["token"] == "fcm-token-1"
    assert message.body["message"]["data"] == {"request_id": "cmd_1", "action": "ring"}
    assert message.authorization == "Bearer access-1"
    row = _row(session_factory, "cmd_1")
    assert (row.fcm_status, row.status, row.attempts) == ("sent", "pending", 1)
    assert row.fcm_message_id.endswith("/messages/1") and row.sent_at >= row.created_at
    assert row.lease_until is None


def test_access_token_is_cached(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    for i in range(3):
        _command(session_factory, settings, f"cmd_{i}")
    worker.run_once()
    assert len(fake_fcm.messages) == 3 and fake_fcm.token_requests == 1


@pytest.mark.slow
def test_unavailable_with_retry_after_is_retried_no_sooner(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_r")
    # 3 s: above the first backoff step (fcm_backoff_seconds 1.0, so at most 1 s), and the sender holds every
    # send that long in real time, so a longer Retry-After only made the test longer (it was 20 s: 22 s a run)
    fake_fcm.script(503, "UNAVAILABLE", {"Retry-After": "3"})
    before = datetime.now(UTC)
    assert worker.run_once() == ["retry"]
    row = _row(session_factory, "cmd_r")
    assert row.fcm_status == "pending" and "UNAVAILABLE" in row.last_error
    assert row.next_attempt_at >= before + timedelta(seconds=3)
    assert worker.run_once(now=row.next_attempt_at - timedelta(milliseconds=1)) == []
    assert worker.run_once(now=row.next_attempt_at) == ["sent"]
    assert fake_fcm.sent_request_ids() == ["cmd_r", "cmd_r"]
    row = _row(session_factory, "cmd_r")
    assert (row.fcm_status, row.attempts) == ("sent", 2)


def test_backoff_grows_and_gives_up(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_b")
    fake_fcm.always = (500, {"error": {"code": 500, "status": "INTERNAL"}}, {})
    delays = []
    now = datetime.now(UTC)
    for _ in range(worker.settings.fcm_max_attempts - 1):
        assert worker.run_once(now=now) == ["retry"]
        recorded = datetime.now(UTC)
        row = _row(session_factory, "cmd_b")
        delays.append((row.next_attempt_at - recorded).total_seconds())
        now = row.next_attempt_at
    # base 1 s doubling per attempt, jitter fixed at 75 % of the step by rng=0.5
    assert delays == pytest.approx([0.75, 1.5, 3.0, 6.0], abs=0.3)
    assert worker.run_once(now=now) == ["gave_up"]
    assert _row(session_factory, "cmd_b").fcm_status == "failed"
    assert worker.run_once(now=now + timedelta(hours=1)) == []


def test_unregistered_marks_token_dead_without_retry(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_u")
    _command(session_factory, settings, "cmd_u2")
    fake_fcm.script(404, "UNREGISTERED")
    fake_fcm.script(404, "UNREGISTERED")
    assert sorted(worker.run_once()) == ["unregistered", "unregistered"]
    assert worker.run_once(now=datetime.now(UTC) + timedelta(days=1)) == []
    assert len(fake_fcm.messages) == 2
    assert _row(session_factory, "cmd_u").fcm_status == "failed"
    assert _row(session_factory, "cmd_u").status == "pending"  # still fetchable by polling
    with session_factory() as db:
        assert db.get(Device, "dev_1").fcm_token_dead_at is not None
        assert [d["request_id"] for d in dispatches.pending_commands(db, "dev_1")] == ["cmd_u", "cmd_u2"]


def test_dead_token_is_skipped_until_revived(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory, token=None)
    _command(session_factory, settings, "cmd_s")
    assert worker.run_once() == ["skipped"]
    assert fake_fcm.messages == []
    assert _row(session_factory, "cmd_s").fcm_status == "skipped"


def test_invalid_argument_fails_at_once(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_i")
    fake_fcm.script(400, "INVALID_ARGUMENT")
    assert worker.run_once() == ["invalid"]
    assert worker.run_once(now=datetime.now(UTC) + timedelta(days=1)) == []
    row = _row(session_factory, "cmd_i")
    assert row.fcm_status == "failed" and "INVALID_ARGUMENT" in row.last_error


def test_auth_failure_refreshes_once(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_a")
    fake_fcm.script(401, "THIRD_PARTY_AUTH_ERROR")
    assert worker.run_once() == ["sent"]
    assert fake_fcm.token_requests == 2
    assert [m.authorization for m in fake_fcm.messages] == ["Bearer access-1", "Bearer access-2"]


def test_persistent_auth_failure_fails_loudly(
    worker: DeliveryWorker,
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_a")
    fake_fcm.always = (401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}, {})
    assert worker.run_once() == ["auth"]
    assert _row(session_factory, "cmd_a").fcm_status == "failed"
    assert any(r.levelname == "ERROR" and "authentication failed" in r.getMessage() for r in caplog.records)


def test_worker_killed_after_claim_loses_nothing(
    worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    _command(session_factory, settings, "cmd_k")
    claims = worker.claim()  # the claim is committed; the "crashed" worker never sends
    assert [c.request_id for c in claims] == ["cmd_k"]
    assert worker.run_once() == []  # leased: nobody else takes it yet
    after_lease = claims[0].lease_until + timedelta(milliseconds=1)
    assert worker.run_once(now=after_lease) == ["sent"]
    assert fake_fcm.sent_request_ids() == ["cmd_k"]
    # the crashed worker's late outcome cannot overwrite the new owner's
    assert worker.record(claims[0], fcm.SendResult(fcm.INVALID, error="late")) == "lease_lost"
    assert _row(session_factory, "cmd_k").fcm_status == "sent"


def test_two_workers_send_each_row_exactly_once(
    session_factory: sessionmaker[Session], settings: Settings, fcm_settings: Settings, fake_fcm: FakeFcm
) -> None:
    _device(session_factory)
    with session_factory.begin() as db:
        for i in range(200):
            dispatches.create_command(db, settings, request_id=f"bulk_{i:03d}", device_id="dev_1", action="sync")
    engine = make_engine(fcm_settings.database_url, pool_size=20)
    factory = make_session_factory(engine, fcm_settings)
    workers = [DeliveryWorker(factory, fcm_settings, client_from_settings(fcm_settings)) for _ in range(2)]
    outcomes: list[list[str]] = [[], []]

    def drain(i: int) -> None:
        while batch := workers[i].run_once():
            outcomes[i].extend(batch)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in workers:
        w.close()
    engine.dispose()
    ids = fake_fcm.sent_request_ids()
    assert len(ids) == 200 and len(set(ids)) == 200
    assert sorted(outcomes[0] + outcomes[1]) == ["sent"] * 200  # no retries, no lost leases
    with session_factory() as db:
        assert set(db.execute(select(FcmDispatch.fcm_status)).scalars()) == {"sent"}
        assert queue_stats(db)["depth"] == 0


def test_expiry_sweep(worker: DeliveryWorker, session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    _command(session_factory, settings, "old")
    _command(session_factory, settings, "new")
    with session_factory.begin() as db:
        db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.request_id == "old")
            .values(created_at=datetime.now(UTC) - timedelta(seconds=settings.command_ttl_seconds + 5))
        )
    assert worker.sweep_expired() == 1
    assert _row(session_factory, "old").status == "expired"
    assert _row(session_factory, "new").status == "pending"
    with session_factory() as db:
        assert [d["request_id"] for d in dispatches.pending_commands(db, "dev_1")] == ["new"]
        assert [h["status"] for h in dispatches.get_dispatch(db, "old")["history"]] == ["pending", "expired"]


def test_without_credentials_there_is_no_client(settings: Settings) -> None:
    assert settings.fcm_credentials is None
    assert client_from_settings(settings) is None


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (404, "UNREGISTERED", fcm.UNREGISTERED),
        (400, "INVALID_ARGUMENT", fcm.INVALID),
        (403, "SENDER_ID_MISMATCH", fcm.INVALID),
        (429, "QUOTA_EXCEEDED", fcm.RETRY),
        (503, "UNAVAILABLE", fcm.RETRY),
        (500, "INTERNAL", fcm.RETRY),
        (401, "THIRD_PARTY_AUTH_ERROR", fcm.AUTH),
    ],
)
def test_classification(status: int, code: str, outcome: str) -> None:
    from tests.support.fakes.fcm import error_body

    assert fcm.classify(status, error_body(status, code)).outcome == outcome


def test_retry_after_forms() -> None:
    assert fcm.parse_retry_after("7") == 7.0
    assert fcm.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert fcm.parse_retry_after("soon") is None


def test_worker_survives_a_pool_timeout(
    session_factory: sessionmaker[Session], settings: Settings, fcm_settings: Settings, fake_fcm: FakeFcm
) -> None:
    """Under API load the worker may wait too long for a pooled connection: it must go on afterwards."""
    _device(session_factory)
    engine = make_engine(fcm_settings.database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    factory = make_session_factory(engine, fcm_settings.with_overrides(delivery_poll_seconds=0.05))
    worker = DeliveryWorker(factory, fcm_settings, client_from_settings(fcm_settings))
    stop = threading.Event()
    held = engine.connect()  # the only connection: the worker's next claim times out
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"sweep_every": 3600})
    thread.start()
    try:
        time.sleep(0.6)
        assert thread.is_alive()
        held.close()
        _command(session_factory, settings, "after_timeout")
        deadline = time.monotonic() + 10
        while fake_fcm.sent_request_ids() != ["after_timeout"]:
            assert time.monotonic() < deadline, "the worker stopped pushing after a pool timeout"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        worker.close()
        engine.dispose()
