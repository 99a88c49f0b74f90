"""``nexmdm worker`` against the loopback fake FCM."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from core.base.settings import Settings
from core.commands import dispatches
from core.models import Device
from nexmdm_cli.main import app
from tests.support.fakes.fcm import FakeFcm, write_service_account


def test_worker_once_pushes_pending_commands(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    fake = FakeFcm().start()
    try:
        key = write_service_account(tmp_path / "sa.json", f"{fake.url}/token")
        with session_factory.begin() as db:
            db.add(Device(id="dev_w", fcm_token="tok-w"))
            db.flush()
            dispatches.create_command(db, settings, request_id="w1", device_id="dev_w", action="ping")
        env = {"NEXMDM_FCM_CREDENTIALS": str(key), "NEXMDM_FCM_ENDPOINT": fake.url}
        result = CliRunner().invoke(app, ["--database-url", database_url, "worker", "--once", "--json"], env=env)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == {"expired": 0, "campaign_releases": 0, "outcomes": ["sent"]}
        assert fake.sent_request_ids() == ["w1"]
    finally:
        fake.stop()


def test_worker_without_credentials_says_so(database_url: str, engine) -> None:
    result = CliRunner().invoke(app, ["--database-url", database_url, "worker", "--once"], env={})
    assert result.exit_code == 2
    assert "FCM is not configured" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
