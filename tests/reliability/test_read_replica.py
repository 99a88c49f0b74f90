"""``NEXMDM_DATABASE_READ_URL``: admin listings from a real streaming replica (a throwaway primary and a
``pg_basebackup`` standby), what the operator sees when it lags, and what never goes there."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from litestar.testing import TestClient
from sqlalchemy import create_engine
from typer.testing import CliRunner

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.models import Device
from core.storage.engine import make_session_factory
from core.storage.migrations import alembic_config
from nexmdm_api import create_app
from nexmdm_cli.main import app
from tests.support.databases import IN_CI
from tests.support.pgreplica import Standby, start_pair


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, Standby]]:
    try:
        primary, standby = start_pair()
    except (FileNotFoundError, OSError, subprocess.CalledProcessError) as exc:
        message = f"cannot start a throwaway primary and standby: {exc}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    command.upgrade(alembic_config(primary.url), "head")
    standby.wait_caught_up()
    yield primary.url, standby
    standby.destroy()
    primary.destroy()


def _add_device(url: str, device_id: str) -> None:
    engine = create_engine(url)
    with make_session_factory(engine).begin() as db:
        db.add(Device(id=device_id))
    engine.dispose()


def test_admin_listings_read_the_replica_and_say_how_far_behind(pair: tuple[str, Standby], tmp_path: Path) -> None:
    primary_url, standby = pair
    engine = create_engine(primary_url)
    with make_session_factory(engine).begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="replica-ops")  # used at once: checked on the primary
    engine.dispose()
    admin = {"Authorization": f"Bearer {secret}"}
    _add_device(primary_url, "dev_seen")
    standby.wait_caught_up()
    settings = Settings(database_url=primary_url, database_read_url=standby.url, data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        listed = client.get("/v1/devices", headers=admin)
        assert listed.status_code == 200, listed.text
        assert listed.headers["nexmdm-read-from"] == "replica" and float(listed.headers["nexmdm-replica-lag"]) == 0
        assert [d["device_id"] for d in listed.json()["items"]] == ["dev_seen"]

        standby.pause()  # the replica stops replaying: it falls behind
        try:
            _add_device(primary_url, "dev_new")
            time.sleep(1.2)  # past the router's one-second measurement cache
            behind = client.get("/v1/devices", headers=admin)
            # the operator sees stale data, and is told so: served by the replica, lag in seconds
            assert behind.headers["nexmdm-read-from"] == "replica"
            assert float(behind.headers["nexmdm-replica-lag"]) > 0
            assert [d["device_id"] for d in behind.json()["items"]] == ["dev_seen"]
            # a device's own reads and an admin's read of one command never go to the replica
            assert "nexmdm-read-from" not in client.get("/v1/commands/none", headers=admin).headers
            assert "nexmdm_replica_lag_seconds" in client.get("/metrics").text
            engine = create_engine(primary_url)
            with make_session_factory(engine).begin() as db:  # a key the replica has not seen yet works at once
                late, _ = admin_keys.create_admin_key(db, name="made-while-behind")
            engine.dispose()
            assert client.get("/v1/devices", headers={"Authorization": f"Bearer {late}"}).status_code == 200

            strict = settings.with_overrides(database_read_max_lag_seconds=0.5)
            with TestClient(create_app(strict)) as fresh:  # over the limit: the primary answers, and says why
                time.sleep(0.6)
                answered = fresh.get("/v1/devices", headers=admin)
                assert answered.headers["nexmdm-read-from"] == "primary"
                assert "behind" in answered.headers["nexmdm-read-reason"]
                assert [d["device_id"] for d in answered.json()["items"]] == ["dev_new", "dev_seen"]

            cli = CliRunner().invoke(
                app,
                ["--database-url", primary_url, "devices", "list", "--json"],
                env={"NEXMDM_DATABASE_READ_URL": standby.url, "NEXMDM_DATA_DIR": str(tmp_path)},
            )
            assert cli.exit_code == 0, cli.output
            assert "read from the replica" in cli.stderr and "behind the primary" in cli.stderr
            assert [d["device_id"] for d in json.loads(cli.stdout)["items"]] == ["dev_seen"]
        finally:
            standby.resume()
        standby.wait_caught_up()


def test_replica_down_reads_the_primary(pair: tuple[str, Standby], tmp_path: Path) -> None:
    primary_url, _ = pair
    engine = create_engine(primary_url)
    with make_session_factory(engine).begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="replica-down")
    engine.dispose()
    gone = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens there
    settings = Settings(database_url=primary_url, database_read_url=gone, data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        answered = client.get("/v1/devices", headers={"Authorization": f"Bearer {secret}"})
        assert answered.status_code == 200
        assert answered.headers["nexmdm-read-from"] == "primary"
        assert answered.headers["nexmdm-read-reason"] == "replica unreachable"
