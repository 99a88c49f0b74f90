"""A PostgreSQL restart under NexMDM's feet, on a throwaway cluster: nothing needs a restart of NexMDM."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.base.settings import Settings
from core.commands import dispatches
from core.commands.push import DeliveryWorker, client_from_settings
from core.models import Device
from core.storage.engine import make_engine, make_session_factory
from tests.support.fakes.fcm import FakeFcm, write_service_account
from tests.support.pgcluster import Cluster


def test_engine_recovers_after_restart(pg_cluster: Cluster) -> None:
    engine = make_engine(pg_cluster.url, pool_size=2)
    started = time.monotonic()
    with engine.connect() as conn:  # a fresh connection and a round trip: this machine's pace right now
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    healthy = time.monotonic() - started
    pg_cluster.stop()
    started = time.monotonic()
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    # refused at once, no hang (a stale pooled connection would wait for TCP timeouts: minutes); the margin
    # scales with how slow a healthy connect was just before, on a loaded machine
    assert time.monotonic() - started < 5 + 20 * healthy
    pg_cluster.start()
    for _ in range(3):  # every pooled connection was stale; pre-ping replaces them without an error
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    engine.dispose()


def test_delivery_worker_waits_out_an_outage(pg_cluster: Cluster, tmp_path: Path) -> None:
    fake = FakeFcm().start()
    key = write_service_account(tmp_path / "sa.json", f"{fake.url}/token")
    settings = Settings(
        database_url=pg_cluster.url,
        data_dir=tmp_path,
        fcm_credentials=key,
        fcm_endpoint=fake.url,
        delivery_poll_seconds=0.05,
    )
    engine = make_engine(pg_cluster.url, pool_size=4)
    factory = make_session_factory(engine, settings)
    with factory.begin() as db:
        db.add(Device(id="dev_restart", fcm_token="tok"))
        db.flush()
        dispatches.create_command(db, settings, request_id="before", device_id="dev_restart", action="ping")
    worker = DeliveryWorker(factory, settings, client_from_settings(settings))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"sweep_every": 0.2})
    thread.start()
    try:
        _wait(lambda: "before" in fake.sent_request_ids())
        pg_cluster.stop()
        time.sleep(1.0)
        pg_cluster.start()
        with factory.begin() as db:
            dispatches.create_command(db, settings, request_id="after", device_id="dev_restart", action="ping")
        _wait(lambda: "after" in fake.sent_request_ids(), timeout=20)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
        worker.close()
        engine.dispose()
        fake.stop()
    assert sorted(fake.sent_request_ids()) == ["after", "before"]


def _wait(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_an_idle_pooled_connection_is_checked_before_use(pg_cluster: Cluster) -> None:
    """A restart while the pool sat idle costs no failed statement: the idle connection is pinged and replaced."""
    from core.storage import engine as core_db

    engine = make_engine(pg_cluster.url, pool_size=1)
    with engine.connect() as conn:
        first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    pg_cluster.stop()
    pg_cluster.start()
    time.sleep(core_db.PING_AFTER_IDLE_SECONDS + 0.2)
    with engine.connect() as conn:  # no OperationalError: the ping found the old connection dead
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    with engine.connect() as conn:  # in steady use: no ping, the same (new) connection
        conn.execute(text("SELECT 1"))
    assert engine.pool.checkedin() == 1
    engine.dispose()
