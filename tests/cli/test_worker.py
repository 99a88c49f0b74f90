"""``nexmdm worker`` against the loopback fake FCM."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from core import campaigns as fleet
from core.base.settings import Settings
from core.commands import dispatches
from core.models import Device, FcmDispatch
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
        assert json.loads(result.stdout) == {
            "expired": 0,
            "campaign_releases": 0,
            "outcomes": ["sent"],
            "fcm_configured": True,
        }
        assert fake.sent_request_ids() == ["w1"]
    finally:
        fake.stop()


def test_worker_without_credentials_runs_maintenance_and_no_push(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_factory.begin() as db:
        db.add(Device(id="dev_p", fcm_token="tok-p"))
        db.flush()
        dispatches.create_command(db, settings, request_id="p1", device_id="dev_p", action="ping")
        _, campaign = fleet.create_campaign(db, settings, idempotency_key="poll-1", action="sync", device_ids=["dev_p"])
    env = {"NEXMDM_FCM_CREDENTIALS": ""}
    result = CliRunner().invoke(app, ["--database-url", database_url, "worker", "--once", "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "expired": 0,
        "campaign_releases": 1,
        "outcomes": [],
        "fcm_configured": False,
    }
    assert result.stderr.count("FCM is not configured") == 1 and "no push delivery" in result.stderr
    with session_factory() as db:  # the campaign's command was released; no push was tried or skipped
        pushes = dict(db.execute(select(FcmDispatch.request_id, FcmDispatch.fcm_status)).all())
    assert pushes == {"p1": "pending", f"{campaign['id']}:dev_p": "pending"}
    people = CliRunner().invoke(app, ["--database-url", database_url, "worker", "--once"], env=env)
    assert people.exit_code == 0 and "Traceback" not in people.stderr + people.stdout
