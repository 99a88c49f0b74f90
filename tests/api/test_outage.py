"""PostgreSQL goes away under a running API (a throwaway cluster): fast 503s, then recovery without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from litestar.testing import TestClient

from core import credentials, devices
from core.db import make_engine, make_session_factory
from core.migrations import alembic_config
from core.settings import Settings
from nexmdm_api import create_app
from tests.conftest import IN_CI
from tests.pgcluster import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        c = Cluster().init()
        c.start()
    except (FileNotFoundError, OSError) as exc:
        if IN_CI:
            pytest.fail(f"cannot start a throwaway PostgreSQL cluster: {exc}")
        pytest.skip(f"cannot start a throwaway PostgreSQL cluster: {exc}")
    command.upgrade(alembic_config(c.url), "head")
    yield c
    c.destroy()


def test_database_outage_is_a_fast_503_and_the_api_recovers(cluster: Cluster, tmp_path: Path) -> None:
    settings = Settings(database_url=cluster.url, data_dir=tmp_path)
    engine = make_engine(cluster.url)
    with make_session_factory(engine, settings).begin() as db:
        secret, _ = credentials.create_enrollment_token(db, uses=1)
        device_token = devices.enroll_device(db, enrollment_secret=secret, device_id="dev_001")["device_token"]
    engine.dispose()
    headers = {"Authorization": f"Bearer {device_token}"}
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/heartbeat", json={"status": "ok"}, headers=headers).status_code in (200, 201)
        cluster.stop()
        try:
            started = time.monotonic()
            down = client.post("/v1/heartbeat", json={"status": "ok"}, headers=headers)
            assert down.status_code == 503
            assert down.headers["retry-after"] and down.headers["content-type"] == "application/problem+json"
            assert client.get("/readyz").status_code == 503
            assert time.monotonic() - started < 5
        finally:
            cluster.start()
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/heartbeat", json={"status": "ok"}, headers=headers).status_code in (200, 201)
