"""Two ``nexmdm worker`` processes with ``NEXMDM_REDIS_URL`` share one FCM rate cap (the real Redis).

Each process alone may send the whole ``NEXMDM_FCM_MAX_PER_MINUTE``; together, through the Redis bucket,
they never pass it beyond the documented burst (one second's worth plus one grant per sender), counted
where the requests arrive: at the fake FCM, with its receive times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core import dispatches
from core.delivery.ratecap import SharedRateGate
from core.models import Device, FcmDispatch
from core.redis_link import RedisLink
from core.settings import Settings
from tests.fakes.fcm import FakeFcm, write_service_account
from tests.redis_server import shared_prefix

COMMANDS = 300
PER_MINUTE = 3000  # 50 a second, bursts of 50
_RUN_CLI = "from nexmdm_cli.main import run; run()"


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    yield from shared_prefix()


def _most_in_any(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    most, start = 0, 0
    for end, t in enumerate(stamps):
        while t - stamps[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_two_workers_share_the_fcm_cap(
    database_url: str,
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
    tmp_path: Path,
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    with session_factory.begin() as db:
        db.add_all(Device(id=f"dev_{i:03d}", fcm_token=f"tok-{i:03d}") for i in range(COMMANDS))
        db.flush()
        for i in range(COMMANDS):
            dispatches.create_command(db, settings, request_id=f"c_{i:03d}", device_id=f"dev_{i:03d}", action="sync")
    key = write_service_account(tmp_path / "sa.json", f"{fake_fcm.url}/token")
    env = os.environ | {
        "NEXMDM_DATABASE_URL": database_url,
        "NEXMDM_DATA_DIR": str(tmp_path / "data"),
        "NEXMDM_FCM_CREDENTIALS": str(key),
        "NEXMDM_FCM_ENDPOINT": fake_fcm.url,
        "NEXMDM_FCM_MAX_PER_MINUTE": str(PER_MINUTE),
        "NEXMDM_REDIS_URL": url,
        "NEXMDM_REDIS_KEY_PREFIX": prefix,
        "NEXMDM_DELIVERY_BATCH_SIZE": "40",
        "NEXMDM_DELIVERY_POLL_SECONDS": "0.1",
        "NEXMDM_LOG_LEVEL": "WARNING",
    }
    logs = [(tmp_path / f"worker-{i}.log").open("wb") for i in range(2)]
    workers = [
        subprocess.Popen([sys.executable, "-c", _RUN_CLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        for log in logs
    ]
    try:
        deadline = time.monotonic() + 90
        while len(fake_fcm.messages) < COMMANDS:
            assert time.monotonic() < deadline, f"only {len(fake_fcm.messages)} pushed"
            assert all(w.poll() is None for w in workers), "a worker exited early"
            time.sleep(0.1)
        for w in workers:
            w.send_signal(signal.SIGTERM)
        assert [w.wait(30) for w in workers] == [0, 0]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
        for log in logs:
            log.close()
    with session_factory() as db:
        assert Counter(db.execute(select(FcmDispatch.fcm_status)).scalars()) == Counter({"sent": COMMANDS})
    senders = Counter(m.authorization for m in fake_fcm.messages)
    assert len(senders) == 2, senders  # each process fetched its own access token and sent its share
    stamps = [m.at for m in fake_fcm.messages]
    gate = SharedRateGate(RedisLink(url, prefix), PER_MINUTE)
    rate, burst = PER_MINUTE / 60, gate.burst
    # documented: rate × W + one second's worth + one grant per sender; 20 % of a second of slack for the
    # time between a token and the request's arrival. Two per-process caps would allow 2 × (50 + 50) in
    # the first second.
    assert _most_in_any(stamps, 1.0) <= rate * 1.2 + burst + 2 * gate.grant
    # the whole run: the cap, not the workers, set the pace
    assert max(stamps) - min(stamps) >= (COMMANDS - burst - 2 * gate.grant) / rate - 0.5
