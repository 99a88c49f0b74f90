"""The asyncio sender against the loopback fake FCM, on SQLite and PostgreSQL: what each push carries,
batched outcomes, the pause on 429/503, the rate cap, and the single-command path."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands import dispatches
from core.commands.push import DeliveryWorker, client_from_settings
from core.models import Device, FcmDispatch
from core.storage.engine import make_session_factory
from tests.support.fakes.fcm import FakeFcm, write_service_account


@pytest.fixture
def fcm_settings(settings: Settings, fake_fcm: FakeFcm, tmp_path: Path) -> Settings:
    key = write_service_account(tmp_path / "service-account.json", f"{fake_fcm.url}/token")
    return settings.with_overrides(
        fcm_credentials=key, fcm_endpoint=fake_fcm.url, fcm_backoff_seconds=1.0, delivery_poll_seconds=0.05
    )


@pytest.fixture
def make_worker(
    session_factory: sessionmaker[Session], fcm_settings: Settings
) -> Iterator[Callable[..., DeliveryWorker]]:
    made: list[DeliveryWorker] = []

    def make(**overrides: object) -> DeliveryWorker:
        s = fcm_settings.with_overrides(**overrides)
        worker = DeliveryWorker(
            make_session_factory(session_factory.kw["bind"], s), s, client_from_settings(s), rng=lambda: 0.5
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()


def _device(factory: sessionmaker[Session], device_id: str, token: str | None) -> None:
    with factory.begin() as db:
        db.add(Device(id=device_id, fcm_token=token))


def _command(factory: sessionmaker[Session], settings: Settings, request_id: str, device_id: str, action: str) -> None:
    with factory.begin() as db:
        payload = {"seconds": 5} if action == "ring" else None  # ring's payload schema requires seconds
        dispatches.create_command(
            db, settings, request_id=request_id, device_id=device_id, action=action, payload=payload
        )


def _rows(factory: sessionmaker[Session]) -> dict[str, FcmDispatch]:
    with factory() as db:
        return {r.request_id: r for r in db.execute(select(FcmDispatch)).scalars()}


def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def running() -> Iterator[Callable[[DeliveryWorker], None]]:
    """Run workers' loops in threads; stop and join them at the end."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(worker: DeliveryWorker) -> None:
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"sweep_every": 3600}, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()


def test_push_carries_collapse_key_ttl_and_priority(
    make_worker: Callable[..., DeliveryWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    _device(session_factory, "dev_1", "tok-1")
    _command(session_factory, settings, "c_ring", "dev_1", "ring")
    _command(session_factory, settings, "c_sync", "dev_1", "sync")
    with session_factory.begin() as db:  # a command already 1,000 s old has that much less to live
        db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.request_id == "c_sync")
            .values(created_at=datetime.now(UTC) - timedelta(seconds=1000))
        )
    assert sorted(make_worker().run_once()) == ["sent", "sent"]
    android = {m.body["message"]["data"]["request_id"]: m.body["message"]["android"] for m in fake_fcm.messages}
    ttl = settings.command_ttl_seconds
    assert android["c_ring"]["collapse_key"] == "ring" and android["c_ring"]["priority"] == "high"
    assert android["c_sync"]["collapse_key"] == "sync" and android["c_sync"]["priority"] == "normal"
    assert ttl - 5 <= int(android["c_ring"]["ttl"].removesuffix("s")) <= ttl
    assert ttl - 1005 <= int(android["c_sync"]["ttl"].removesuffix("s")) <= ttl - 1000
    assert fake_fcm.messages[0].body["message"]["data"].keys() == {"request_id", "action"}


def test_high_priority_actions_are_configurable(
    make_worker: Callable[..., DeliveryWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    _device(session_factory, "dev_1", "tok-1")
    _command(session_factory, settings, "c_ring", "dev_1", "ring")
    _command(session_factory, settings, "c_sync", "dev_1", "sync")
    make_worker(fcm_high_priority_actions=("sync",)).run_once()
    priority = {
        m.body["message"]["data"]["action"]: m.body["message"]["android"]["priority"] for m in fake_fcm.messages
    }
    assert priority == {"ring": "normal", "sync": "high"}


def test_mixed_outcomes_are_recorded_in_one_statement(
    make_worker: Callable[..., DeliveryWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    for name, token in [("ok", "t-ok"), ("dead", "t-dead"), ("bad", "t-bad"), ("busy", "t-busy"), ("none", None)]:
        _device(session_factory, f"dev_{name}", token)
        _command(session_factory, settings, f"c_{name}", f"dev_{name}", "sync")
    _device(session_factory, "dev_ok2", "t-ok2")
    _command(session_factory, settings, "c_ok2", "dev_ok2", "ping")
    fake_fcm.answer_token("t-dead", 404, "UNREGISTERED")
    fake_fcm.answer_token("t-bad", 400, "INVALID_ARGUMENT")
    fake_fcm.answer_token("t-busy", 500, "INTERNAL")
    worker = make_worker()
    statements: list[str] = []
    engine = session_factory.kw["bind"]

    def seen(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("UPDATE FCM_DISPATCHES"):
            statements.append(statement)

    claims = worker.claim()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        outcomes = worker.send_claims(claims)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert sorted(outcomes) == ["invalid", "retry", "sent", "sent", "skipped", "unregistered"]
    assert len(statements) == 1  # six outcomes of four kinds, one UPDATE
    rows = _rows(session_factory)
    assert {k: (r.fcm_status, r.lease_until) for k, r in rows.items()} == {
        "c_ok": ("sent", None),
        "c_ok2": ("sent", None),
        "c_dead": ("failed", None),
        "c_bad": ("failed", None),
        "c_busy": ("pending", None),
        "c_none": ("skipped", None),
    }
    assert rows["c_ok"].fcm_message_id != rows["c_ok2"].fcm_message_id
    assert rows["c_ok"].sent_at is not None and rows["c_busy"].sent_at is None
    assert "INVALID_ARGUMENT" in rows["c_bad"].last_error and "UNREGISTERED" in rows["c_dead"].last_error
    assert rows["c_busy"].next_attempt_at > datetime.now(UTC) and rows["c_ok"].next_attempt_at is None
    with session_factory() as db:
        dead = {d.id for d in db.execute(select(Device)).scalars() if d.fcm_token_dead_at is not None}
    assert dead == {"dev_dead"}


@pytest.mark.parametrize(("status", "code"), [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE")])
def test_quota_exceeded_pauses_every_send_then_resumes(
    status: int,
    code: str,
    make_worker: Callable[..., DeliveryWorker],
    running: Callable[[DeliveryWorker], None],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    _device(session_factory, "dev_1", "tok-1")
    for i in range(4):
        _command(session_factory, settings, f"c_{i}", "dev_1", "sync")
    fake_fcm.script(status, code, {"Retry-After": "1"})
    worker = make_worker(delivery_concurrency=1)
    running(worker)
    _until(lambda: {r.fcm_status for r in _rows(session_factory).values()} == {"sent"})
    times = [m.at for m in fake_fcm.messages]
    ids = fake_fcm.sent_request_ids()
    assert ids[0] == "c_0" and sorted(ids) == ["c_0", "c_0", "c_1", "c_2", "c_3"]
    # nothing was sent during the pause: the next send waited Retry-After (jitter only adds to it)
    assert min(times[1:]) - times[0] >= 1.0
    assert worker.sender is not None and worker.sender.pauses == 1
    assert _rows(session_factory)["c_0"].attempts == 2


def test_pause_without_retry_after_backs_off(
    make_worker: Callable[..., DeliveryWorker],
    running: Callable[[DeliveryWorker], None],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    _device(session_factory, "dev_1", "tok-1")
    for i in range(2):
        _command(session_factory, settings, f"c_{i}", "dev_1", "sync")
    fake_fcm.script(429, "QUOTA_EXCEEDED")
    worker = make_worker(delivery_concurrency=1, fcm_backoff_seconds=0.5)
    running(worker)
    _until(lambda: {r.fcm_status for r in _rows(session_factory).values()} == {"sent"})
    times = [m.at for m in fake_fcm.messages]
    assert min(times[1:]) - times[0] >= 0.5


def test_rate_cap_spreads_the_sends(
    make_worker: Callable[..., DeliveryWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    _device(session_factory, "dev_1", "tok-1")
    with session_factory.begin() as db:
        for i in range(25):
            dispatches.create_command(db, settings, request_id=f"c_{i}", device_id="dev_1", action="sync")
    outcomes = make_worker(fcm_max_per_minute=600).run_once()  # 10 a second, bursts of one second's worth
    assert outcomes == ["sent"] * 25
    times = sorted(m.at for m in fake_fcm.messages)
    assert times[-1] - times[0] >= 1.0


def test_a_single_command_is_pushed_within_a_second_of_its_commit(
    make_worker: Callable[..., DeliveryWorker],
    running: Callable[[DeliveryWorker], None],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    _device(session_factory, "dev_1", "tok-1")
    running(make_worker(delivery_poll_seconds=0.5))  # the default poll
    time.sleep(0.8)  # the worker is idle, polling
    _command(session_factory, settings, "c_1", "dev_1", "lock")
    committed = time.time()
    _until(lambda: len(fake_fcm.messages) == 1, timeout=30)
    # ~1 s is the promise (one 0.5 s poll and a claim). The bound is ten polls wide so that two loaded cores
    # delaying a transaction cannot fail it; it still fails a worker that stops polling while idle (it would
    # wait for its 30 s lease or a wake-up that never comes). The latency itself belongs to a benchmark.
    assert fake_fcm.messages[0].at - committed < 5


def test_a_claim_whose_lease_is_ending_is_not_sent(
    make_worker: Callable[..., DeliveryWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    """After a long pause another worker may own the row: never send without the lease."""
    import dataclasses

    _device(session_factory, "dev_1", "tok-1")
    _command(session_factory, settings, "c_1", "dev_1", "sync")
    worker = make_worker()
    (claim,) = worker.claim()
    ending = dataclasses.replace(claim, lease_until=datetime.now(UTC) + timedelta(milliseconds=300))
    assert worker.send_claims([ending]) == ["lease_lost"]
    assert fake_fcm.messages == []
    row = _rows(session_factory)["c_1"]
    assert row.fcm_status == "pending" and row.lease_until == claim.lease_until  # untouched: it goes back later


def test_a_command_past_its_life_is_skipped_not_pushed(
    make_worker: Callable[..., DeliveryWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
) -> None:
    _device(session_factory, "dev_1", "tok-1")
    _command(session_factory, settings, "c_old", "dev_1", "sync")
    with session_factory.begin() as db:  # older than the TTL, and the expiry sweep has not run yet
        db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.request_id == "c_old")
            .values(created_at=datetime.now(UTC) - timedelta(seconds=settings.command_ttl_seconds + 1))
        )
    assert make_worker().run_once() == ["skipped"]
    assert fake_fcm.messages == []
    row = _rows(session_factory)["c_old"]
    assert row.fcm_status == "skipped" and "expired" in row.last_error


class CountingGate:
    """A rate gate (``core.commands.push.sender.RateGate``) that counts the sends it lets through; the call numbered
    ``slow_call`` waits ``slow_seconds`` first (a cap or a pause holding a send back)."""

    def __init__(self, slow_call: int = 0, slow_seconds: float = 0.0) -> None:
        self.calls = 0
        self.slow_call, self.slow_seconds = slow_call, slow_seconds

    async def acquire(self, amount: float = 1) -> None:
        self.calls += 1
        if self.calls == self.slow_call:
            await asyncio.sleep(self.slow_seconds)


def _run_once_through(gate: CountingGate, session_factory: sessionmaker[Session], settings: Settings) -> list[str]:
    """One claimed batch delivered by a worker whose sends wait on ``gate``."""
    factory = make_session_factory(session_factory.kw["bind"], settings)
    worker = DeliveryWorker(factory, settings, client_from_settings(settings), limiter=gate)
    try:
        return worker.run_once()
    finally:
        worker.close()


def test_a_shared_rate_gate_is_asked_before_every_send(
    session_factory: sessionmaker[Session], fcm_settings: Settings, settings: Settings, fake_fcm: FakeFcm
) -> None:
    """The hook for a cluster-wide cap (a Redis bucket): every send waits on the gate it is given."""
    _device(session_factory, "dev_1", "tok-1")
    with session_factory.begin() as db:
        for i in range(7):
            dispatches.create_command(db, settings, request_id=f"c_{i}", device_id="dev_1", action="sync")
    gate = CountingGate()
    assert _run_once_through(gate, session_factory, fcm_settings) == ["sent"] * 7
    assert gate.calls == 7


def test_the_retry_after_a_credential_refresh_waits_on_the_gate_too(
    session_factory: sessionmaker[Session], fcm_settings: Settings, settings: Settings, fake_fcm: FakeFcm
) -> None:
    """FCM refusing our access token makes the sender refresh it and send again: two requests, two tokens of
    the cap (else broken credentials would let the cluster send twice its cap)."""
    _device(session_factory, "dev_1", "tok-1")
    _command(session_factory, settings, "c_auth", "dev_1", "sync")
    fake_fcm.script(401, "UNAUTHENTICATED")  # the first send only; the retry is answered normally
    gate = CountingGate()
    assert _run_once_through(gate, session_factory, fcm_settings) == ["sent"]
    assert len(fake_fcm.messages) == 2
    assert gate.calls == 2


def test_a_retry_whose_wait_outlasts_the_lease_is_not_sent(
    session_factory: sessionmaker[Session], fcm_settings: Settings, settings: Settings, fake_fcm: FakeFcm
) -> None:
    """The cap's wait before the retry after a credential refresh can be long (a small cap, a pause): when it
    outlasts the claim's lease, another worker may hold the row, so this one sends nothing more."""
    _device(session_factory, "dev_1", "tok-1")
    _command(session_factory, settings, "c_auth", "dev_1", "sync")
    fake_fcm.script(401, "UNAUTHENTICATED")
    gate = CountingGate(slow_call=2, slow_seconds=2.2)  # a 3 s lease, a 1 s margin: past it
    outcomes = _run_once_through(gate, session_factory, fcm_settings.with_overrides(delivery_lease_seconds=3))
    assert gate.calls == 2
    assert len(fake_fcm.messages) == 1  # the refused first send only
    assert outcomes == ["lease_lost"]  # not sent, not recorded
    assert _rows(session_factory)["c_auth"].fcm_status == "pending"  # left for whoever holds it next
