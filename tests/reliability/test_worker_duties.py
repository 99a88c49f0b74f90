"""``nexmdm worker`` alone does a server's background duties: with no ``nexmdm serve`` running it becomes
the maintenance leader, sweeps device presence (a ``device.offline`` transition) and delivers the webhook
outbox to a real receiver on loopback; stopped cleanly, it hands the lease over."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.events import webhooks
from core.models import Device, DevicePresence, PresenceSweep
from core.ops import leases
from core.ops.maintenance import LEADER_LEASE
from core.storage.types import utcnow
from nexmdm_api.background import METRICS_LEASE
from tests.support.fakes.fcm import FakeFcm
from tests.support.fakes.receiver import Receiver
from tests.support.workers import start_workers, worker_env


def test_a_worker_alone_sweeps_presence_and_delivers_webhooks(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm, tmp_path: Path
) -> None:
    receiver = Receiver().start()
    now = utcnow()
    with session_factory.begin() as db:
        secret, _ = webhooks.add_endpoint(db, url=receiver.url, events=["device.offline"])
        receiver.secret = secret
        # seen an hour ago, last announced online; sweeps ran until a moment ago (no outage grace)
        db.add(Device(id="dev_gone", fcm_token="tok", last_seen_at=now - timedelta(hours=1)))
        db.flush()
        db.add(DevicePresence(device_id="dev_gone", state="online", changed_at=now - timedelta(hours=2)))
        db.add(PresenceSweep(name="presence", swept_at=now - timedelta(seconds=5), grace_from=now - timedelta(hours=3)))
    env = worker_env(
        database_url, fake_fcm, tmp_path, device_offline_seconds="600", webhook_allow_private="true", log_level="INFO"
    )
    (worker,), (log,) = start_workers(env, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not receiver.received:
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text()
            assert worker.poll() is None, (tmp_path / "worker-0.log").read_text()
            time.sleep(0.05)
        with session_factory() as db:
            holder = leases.holder_of(db, LEADER_LEASE)
            exporter = leases.holder_of(db, METRICS_LEASE)
            state = db.execute(select(DevicePresence.state).where(DevicePresence.device_id == "dev_gone")).scalar()
        assert holder is not None and ":worker:" in holder
        assert exporter is None  # a worker serves no /metrics: it never takes the exporters' lease
        assert state == "offline"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        log.close()
        receiver.stop()
    [delivery] = receiver.received
    assert delivery.valid and delivery.event == "device.offline"
    assert delivery.document["data"]["device_id"] == "dev_gone"
    with session_factory() as db:
        assert leases.holder_of(db, LEADER_LEASE) is None  # handed over on a clean stop


def test_a_worker_without_fcm_credentials_runs_webhooks_and_maintenance_and_says_so_once(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm, tmp_path: Path
) -> None:
    """A polling-only fleet: no NEXMDM_FCM_CREDENTIALS, yet a dedicated worker leads maintenance and sends webhooks."""
    receiver = Receiver().start()
    with session_factory.begin() as db:
        secret, endpoint = webhooks.add_endpoint(db, url=receiver.url, events=["device.offline"])
        receiver.secret = secret
        webhooks.send_test(db, endpoint["id"])
    env = worker_env(database_url, fake_fcm, tmp_path, webhook_allow_private="true")
    del env["NEXMDM_FCM_CREDENTIALS"], env["NEXMDM_FCM_ENDPOINT"]
    (worker,), (log,) = start_workers(env, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not receiver.received:
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text()
            assert worker.poll() is None, (tmp_path / "worker-0.log").read_text()
            time.sleep(0.05)
        while True:
            with session_factory() as db:
                holder = leases.holder_of(db, LEADER_LEASE)
            if holder is not None:
                break
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text()
            time.sleep(0.05)
        assert ":worker:" in holder
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        log.close()
        receiver.stop()
    output = (tmp_path / "worker-0.log").read_text()
    assert output.count("FCM is not configured") == 1 and "Traceback" not in output, output
    assert [d.valid for d in receiver.received] == [True]


def test_a_second_signal_stops_the_worker_at_once(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings, fake_fcm: FakeFcm, tmp_path: Path
) -> None:
    """The first SIGTERM lets the push in flight finish (FCM answers in 5 s here); a second one exits now."""
    from core.commands import dispatches

    fake_fcm.delay = 5.0
    with session_factory.begin() as db:
        db.add(Device(id="dev_slow", fcm_token="tok"))
        db.flush()
        dispatches.create_command(db, settings, request_id="c_slow", device_id="dev_slow", action="sync")
    (worker,), (log,) = start_workers(worker_env(database_url, fake_fcm, tmp_path), tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not fake_fcm.messages:  # the push is in flight (the fake records it before its delay)
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text()
            assert worker.poll() is None, (tmp_path / "worker-0.log").read_text()
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.poll() is None  # draining: the push in flight has 4.5 s to go
        worker.send_signal(signal.SIGINT)
        assert worker.wait(3) == 128 + signal.SIGINT
        assert "stopped at once" in (tmp_path / "worker-0.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
