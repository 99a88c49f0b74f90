"""Real ``nexmdm worker`` processes for the delivery tests: their environment, their start, the fleet they push to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands import dispatches
from core.models import Device
from tests.support.fakes.fcm import FakeFcm, write_service_account

RUN_CLI = "from nexmdm_cli.main import run; run()"


def seed_commands(factory: sessionmaker[Session], settings: Settings, count: int) -> None:
    """Devices ``dev_000``… with FCM tokens, and one ``sync`` command ``c_000``… for each."""
    with factory.begin() as db:
        db.add_all(Device(id=f"dev_{i:03d}", fcm_token=f"tok-{i:03d}") for i in range(count))
        db.flush()
        for i in range(count):
            dispatches.create_command(db, settings, request_id=f"c_{i:03d}", device_id=f"dev_{i:03d}", action="sync")


def worker_env(database_url: str, fake_fcm: FakeFcm, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a worker pushing through ``fake_fcm``; ``settings`` are ``NEXMDM_*`` names without it."""
    key = write_service_account(tmp_path / "sa.json", f"{fake_fcm.url}/token")
    return os.environ | {
        "NEXMDM_DATABASE_URL": database_url,
        "NEXMDM_DATA_DIR": str(tmp_path / "data"),
        "NEXMDM_FCM_CREDENTIALS": str(key),
        "NEXMDM_FCM_ENDPOINT": fake_fcm.url,
        **{f"NEXMDM_{name.upper()}": value for name, value in settings.items()},
    }


def start_workers(
    env: dict[str, str], tmp_path: Path, count: int = 1
) -> tuple[list[subprocess.Popen[bytes]], list[IO[bytes]]]:
    """``count`` worker processes, each logging to ``worker-N.log`` in ``tmp_path``; the caller closes the logs."""
    logs: list[IO[bytes]] = [(tmp_path / f"worker-{i}.log").open("wb") for i in range(count)]
    workers = [
        subprocess.Popen([sys.executable, "-c", RUN_CLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        for log in logs
    ]
    return workers, logs


def most_in_any(stamps: list[float], window: float) -> int:
    """The most stamps that fall within any ``window`` seconds."""
    stamps = sorted(stamps)
    most, start = 0, 0
    for end, t in enumerate(stamps):
        while t - stamps[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most
