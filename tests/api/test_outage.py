"""PostgreSQL goes away under a running API (a throwaway cluster): fast 503s, then recovery without a restart."""

from __future__ import annotations

import time
from pathlib import Path

from litestar.testing import TestClient

from core.base.settings import Settings
from core.enrollment import enroll as enrollment
from core.enrollment import tokens as credentials
from core.storage.engine import make_engine, make_session_factory
from nexmdm_api import create_app
from tests.support.pgcluster import Cluster


def test_database_outage_is_a_fast_503_and_the_api_recovers(pg_cluster: Cluster, tmp_path: Path) -> None:
    settings = Settings(database_url=pg_cluster.url, data_dir=tmp_path)
    engine = make_engine(pg_cluster.url)
    with make_session_factory(engine, settings).begin() as db:
        secret, _ = credentials.create_enrollment_token(db, uses=1)
        device_token = enrollment.enroll_device(db, enrollment_secret=secret, device_id="dev_001")["device_token"]
    engine.dispose()
    headers = {"Authorization": f"Bearer {device_token}"}
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/heartbeat", json={"status": "ok"}, headers=headers).status_code in (200, 201)
        pg_cluster.stop()
        try:
            started = time.monotonic()
            down = client.post("/v1/heartbeat", json={"status": "ok"}, headers=headers)
            assert down.status_code == 503
            assert down.headers["retry-after"] and down.headers["content-type"] == "application/problem+json"
            assert client.get("/readyz").status_code == 503
            assert time.monotonic() - started < 5
        finally:
            pg_cluster.start()
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/heartbeat", json={"status": "ok"}, headers=headers).status_code in (200, 201)
