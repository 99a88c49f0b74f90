"""Two ``nexmdm worker`` processes with ``NEXMDM_REDIS_URL`` share one FCM rate cap (the real Redis).

Each process alone may send the whole ``NEXMDM_FCM_MAX_PER_MINUTE``; together, through the Redis bucket,
they never pass it beyond the documented burst (one second's worth plus one grant per sender), counted
where the requests arrive: at the fake FCM, with its receive times.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands.push.ratecap import SharedRateGate
from core.models import FcmDispatch
from core.storage.redis_link import RedisLink
from tests.support.fakes.fcm import FakeFcm
from tests.support.redis_server import shared_prefix
from tests.support.workers import most_in_any, seed_commands, start_workers, worker_env

COMMANDS = 300
PER_MINUTE = 3000  # 50 a second, bursts of 50


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    yield from shared_prefix()


def test_two_workers_share_the_fcm_cap(
    database_url: str,
    session_factory: sessionmaker[Session],
    settings: Settings,
    fake_fcm: FakeFcm,
    tmp_path: Path,
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    seed_commands(session_factory, settings, COMMANDS)
    env = worker_env(
        database_url,
        fake_fcm,
        tmp_path,
        fcm_max_per_minute=str(PER_MINUTE),
        redis_url=url,
        redis_key_prefix=prefix,
        delivery_batch_size="40",
        delivery_poll_seconds="0.1",
        log_level="WARNING",
    )
    workers, logs = start_workers(env, tmp_path, 2)
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
    assert most_in_any(stamps, 1.0) <= rate * 1.2 + burst + 2 * gate.grant
    # the whole run: the cap, not the workers, set the pace
    assert max(stamps) - min(stamps) >= (COMMANDS - burst - 2 * gate.grant) / rate - 0.5
