"""Helpers for CLI tests: run ``nexmdm`` through its real entry point and check the error contract."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from core import db_utils
from core.base.settings import Settings
from core.heartbeats import store as heartbeats
from core.models import ApkBuild, ApkDownloadEvent, Device, FcmDispatch
from core.storage.types import utcnow
from nexmdm_cli.main import app


class Cli:
    """``cli("devices", "list")`` runs ``nexmdm --database-url URL devices list``."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, url: str | None = None) -> Result:
        return self.runner.invoke(app, ["--database-url", url or self.url, *args], input=input, env=self.env)

    def json(self, *args: str, url: str | None = None) -> Any:
        result = self(*args, "--json", url=url)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


def one_error_line(result: Result) -> str:
    """The failure contract: one line on stderr, nothing on stdout, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == "", result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines
    return lines[0]


# ------------------------------------------------------------------------------ seeding real rows


def seed_heartbeat(factory: sessionmaker[Session], device_id: str, ago: timedelta, **data: Any) -> None:
    """A heartbeat received ``ago`` before now (seed oldest first: it also moves the device's last seen)."""
    with factory.begin() as db:
        device = db.get(Device, device_id)
        settings = db.info.get("settings") or Settings()
        heartbeats.record_device_heartbeat(db, device, data, settings, received_at=utcnow() - ago)


def seed_dispatch(
    factory: sessionmaker[Session],
    request_id: str,
    device_id: str = "dev_001",
    *,
    action: str = "ping",
    ago: timedelta = timedelta(0),
    **values: Any,
) -> None:
    """A dispatch created ``ago`` before now; ``values`` set other columns (status, sent_at...)."""
    with factory.begin() as db:
        db_utils.record_fcm_dispatch(
            db, request_id=request_id, device_id=device_id, action=action, payload_hash="0" * 64
        )
        db.execute(
            update(FcmDispatch).where(FcmDispatch.request_id == request_id).values(created_at=utcnow() - ago, **values)
        )


def seed_download(factory: sessionmaker[Session], *, ago: timedelta, version_code: int = 1) -> None:
    with factory.begin() as db:
        build = db.query(ApkBuild).filter_by(version_code=version_code).one_or_none()
        if build is None:
            build = ApkBuild(
                version_code=version_code,
                version_name=f"1.{version_code}",
                filename=f"{version_code}.apk",
                size_bytes=4,
                sha256="0" * 64,
            )
            db.add(build)
            db.flush()
        event = db_utils.record_apk_download(db, build_id=build.id, source="manual", ip="10.0.0.7")["download"]
        db.execute(update(ApkDownloadEvent).where(ApkDownloadEvent.id == event["id"]).values(created_at=utcnow() - ago))


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(model)) or 0
