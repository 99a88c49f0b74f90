"""Everything through PgBouncer in transaction mode: migrations, the API (heartbeats through the writer,
commands, the delivery worker, the maintenance leader) and ``nexmdm cleanup``; no session state is left
on PostgreSQL's connections, which PgBouncer hands from one client to the next.

PgBouncer refuses the ``options`` startup parameter that a direct connection uses for timeouts, so the
old code could not store a single heartbeat through it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.commands import dispatches
from core.enrollment import tokens as credentials
from core.models import DeviceHeartbeat
from core.storage.engine import make_session_factory
from nexmdm_api import create_app
from nexmdm_cli.main import app
from tests.support.cli import count, seed_heartbeat
from tests.support.databases import DatabaseFactory
from tests.support.fakes.fcm import FakeFcm, write_service_account
from tests.support.pgbouncer import PgBouncer

POOLED = {"NEXMDM_DATABASE_POOL_MODE": "transaction"}


@pytest.fixture
def bouncer(databases: DatabaseFactory) -> Iterator[PgBouncer]:
    direct = databases.create("postgresql")  # empty: migrated through PgBouncer below
    bouncer = PgBouncer(direct, pool_size=3).start()  # fewer server connections than clients: they are shared
    yield bouncer
    bouncer.stop()


def _until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _server_settings(url: str) -> list[tuple[str, str]]:
    """``lock_timeout`` and ``statement_timeout`` of every server connection in the pool (each held at once)."""
    engine = create_engine(url, pool_size=3, max_overflow=0)
    conns = [engine.connect() for _ in range(3)]
    try:
        for conn in conns:
            conn.begin()
        return [
            tuple(
                conn.execute(text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")).one()
            )
            for conn in conns
        ]
    finally:
        for conn in conns:
            conn.close()
        engine.dispose()


def test_api_workers_and_cli_through_pgbouncer(
    bouncer: PgBouncer, fake_fcm: FakeFcm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXMDM_DATABASE_POOL_MODE", "transaction")
    runner = CliRunner()
    env = POOLED | {"NEXMDM_DATA_DIR": str(tmp_path / "data")}
    upgraded = runner.invoke(app, ["--database-url", bouncer.url, "db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output

    key = write_service_account(tmp_path / "sa.json", f"{fake_fcm.url}/token")
    settings = Settings(
        database_url=bouncer.url,
        data_dir=tmp_path / "data",
        database_pool_mode="transaction",
        fcm_credentials=key,
        fcm_endpoint=fake_fcm.url,
        delivery_poll_seconds=0.05,
        db_pool_size=4,
    )
    factory = make_session_factory(create_engine(bouncer.url), settings)
    with factory.begin() as db:
        admin_secret, _ = admin_keys.create_admin_key(db, name="ops")
        enrollment, _ = credentials.create_enrollment_token(db, uses=50, expires_in=timedelta(hours=1))
    admin = {"Authorization": f"Bearer {admin_secret}"}

    with TestClient(create_app(settings)) as client:
        tokens = []
        for i in range(8):
            enrolled = client.post(
                "/v1/enroll",
                json={"device_id": f"dev_{i}", "fcm_token": f"fcm-{i}"},
                headers={"Authorization": f"Bearer {enrollment}"},
            )
            assert enrolled.status_code == 201, enrolled.text
            tokens.append(enrolled.json()["device_token"])

        def beat(token: str) -> int:
            return client.post(
                "/v1/heartbeat", json={"status": "ok"}, headers={"Authorization": f"Bearer {token}"}
            ).status_code

        with ThreadPoolExecutor(8) as pool:  # more clients than server connections, through the writer
            assert sorted(pool.map(beat, tokens)) == [201] * 8
        sent = client.post(
            "/v1/devices/dev_0/commands",
            json={"action": "ring", "payload": {"seconds": 5}},
            headers=admin | {"Idempotency-Key": "pgb-1"},
        )
        assert sent.status_code == 202, sent.text
        _until(lambda: fake_fcm.sent_request_ids() == ["pgb-1"])  # the delivery worker's claim and lease
        _until(lambda: client.get("/v1/commands/pgb-1", headers=admin).json()["fcm_status"] == "sent")
        assert len(client.get("/v1/devices?limit=5", headers=admin).json()["items"]) == 5
        with factory() as db:  # the maintenance loop took its lease through PgBouncer
            assert db.execute(text("SELECT holder FROM leases WHERE name = 'maintenance'")).scalar_one()

    with factory.begin() as db:  # pushed by a `nexmdm worker` of its own this time
        dispatches.create_command(db, settings, request_id="pgb-2", device_id="dev_2", action="ping")
    worker_env = env | {"NEXMDM_FCM_CREDENTIALS": str(key), "NEXMDM_FCM_ENDPOINT": fake_fcm.url}
    pushed = runner.invoke(app, ["--database-url", bouncer.url, "worker", "--once", "--json"], env=worker_env)
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.stdout)["outcomes"] == ["sent"]
    assert fake_fcm.sent_request_ids() == ["pgb-1", "pgb-2"]

    seed_heartbeat(factory, "dev_1", timedelta(days=45), battery_pct=5)  # creates a partition 45 days back
    cleaned = runner.invoke(app, ["--database-url", bouncer.url, "cleanup", "--json"], env=env)
    assert cleaned.exit_code == 0, cleaned.output
    assert json.loads(cleaned.stdout)["results"]["device_heartbeats"]["deleted"] == 1
    assert count(factory, DeviceHeartbeat) == 8
    factory.kw["bind"].dispose()
    # nothing set for a session stayed behind on the server connections the next clients get
    assert set(_server_settings(bouncer.url)) == {("0", "0")}
    assert "unsupported startup parameter" not in bouncer.log()
