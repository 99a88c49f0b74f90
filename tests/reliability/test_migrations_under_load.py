"""Migrations beside live traffic on PostgreSQL (issue #7, item 7).

A migration that waits for a table lock holds its place in PostgreSQL's lock queue, and every later
statement on that table queues behind it: one long report transaction plus one ``ALTER TABLE devices``
would stop the heartbeat path for as long as the report runs. ``nexmdm db upgrade`` runs under a short
``lock_timeout`` and retries, so the queue clears after at most that timeout per attempt.

Each test uses a fresh database on the shared server (nothing here stops a server) and runs the real CLI
as a subprocess, reading its stderr as it goes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from core.base.settings import Settings
from core.enrollment import enroll as enrollment
from core.enrollment import tokens as credentials
from core.storage.engine import make_engine, make_session_factory
from core.storage.migrations import alembic_config, current_revision, head_revision, script_location
from nexmdm_api import create_app
from tests.support.databases import DatabaseFactory, migrate

RETRY_LINE = "lock timeout"


class Cli:
    """``nexmdm --database-url URL ARGS...`` as a subprocess whose stderr lines are collected as they come."""

    def __init__(self, url: str, *args: str, env: dict[str, str], scripts: Path | None = None) -> None:
        code = "from nexmdm_cli.main import run; run()"
        if scripts is not None:  # the same CLI, migrating from another copy of the migrations folder
            patch = (
                "import pathlib, core.storage.migrations as m; "
                f"m.script_location = lambda: pathlib.Path({str(scripts)!r})"
            )
            code = f"{patch}; {code}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--database-url", url, *args],
            env=os.environ | {"COLUMNS": "200"} | env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def retries(self) -> int:
        return sum(RETRY_LINE in line for line in self.lines)

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def _env(lock_timeout_ms: int, retries: int, backoff_ms: int) -> dict[str, str]:
    return {
        "NEXMDM_MIGRATION_LOCK_TIMEOUT_MS": str(lock_timeout_ms),
        "NEXMDM_MIGRATION_RETRIES": str(retries),
        "NEXMDM_MIGRATION_BACKOFF_MS": str(backoff_ms),
    }


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def _index_valid(engine: Engine, name: str) -> bool | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :n"),
            {"n": name},
        ).scalar_one_or_none()


@pytest.fixture
def pg_url(databases: DatabaseFactory) -> str:
    url = databases.create("postgresql")
    migrate(url)
    return url


def test_upgrade_behind_a_long_lock_times_out_retries_and_succeeds_once_released(pg_url: str) -> None:
    """The real 0002 migration (columns plus an index on fcm_dispatches) against a long report transaction."""
    command.downgrade(alembic_config(pg_url), "0001")
    engine = make_engine(pg_url, pool_size=2)
    report = engine.connect()
    try:
        report.execute(text("SELECT count(*) FROM fcm_dispatches"))  # ACCESS SHARE, held until the report ends

        # too few attempts: a clean failure (one line, no traceback), nothing half-applied
        started = time.monotonic()
        gave_up = Cli(pg_url, "db", "upgrade", env=_env(lock_timeout_ms=200, retries=1, backoff_ms=100))
        assert gave_up.wait(60) == 75, gave_up.stderr  # EX_TEMPFAIL: try again later
        assert time.monotonic() - started < 30
        assert gave_up.retries() == 1
        assert "gave up" in gave_up.stderr and "Traceback" not in gave_up.stderr
        assert current_revision(engine) == "0001"
        assert _index_valid(engine, "ix_fcm_dispatches_fcm_status_next_attempt_at") is None

        # enough attempts: it keeps retrying (never hangs on the lock), and succeeds once the report ends
        upgrade = Cli(pg_url, "db", "upgrade", env=_env(lock_timeout_ms=300, retries=50, backoff_ms=200))
        _until(lambda: upgrade.retries() >= 2, 30, "two retries of the upgrade")
        assert upgrade.proc.poll() is None
        assert current_revision(engine) == "0001"
    finally:
        report.rollback()
        report.close()
    assert upgrade.wait(60) == 0, upgrade.stderr
    assert current_revision(engine) == head_revision()
    # built concurrently, and complete
    assert _index_valid(engine, "ix_fcm_dispatches_fcm_status_next_attempt_at") is True
    engine.dispose()


_TEST_MIGRATION = '''"""test only: a column on devices and an index on the partitioned heartbeats table"""
import sqlalchemy as sa
from alembic import op

from core.storage.migrations import create_index_concurrently, drop_index_concurrently

revision = "9001"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("test_note", sa.Text(), nullable=True))
    create_index_concurrently("ix_device_heartbeats_test_status", "device_heartbeats", ["status"])


def downgrade() -> None:
    op.drop_index("ix_device_heartbeats_test_status", table_name="device_heartbeats")
    op.drop_column("devices", "test_note")
'''


def test_heartbeats_keep_flowing_while_a_migration_waits_for_devices(pg_url: str, tmp_path: Path) -> None:
    """``ALTER TABLE devices`` queued behind a long reader: heartbeats wait at most about one lock timeout."""
    lock_timeout_ms = 500
    scripts = tmp_path / "migrations"
    shutil.copytree(script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9001_test_only.py").write_text(_TEST_MIGRATION.format(head=head_revision()))

    settings = Settings(database_url=pg_url, data_dir=tmp_path / "data", heartbeat_rate_per_minute=0)
    engine = make_engine(pg_url, pool_size=2)
    tokens = []
    with make_session_factory(engine, settings).begin() as db:
        secret, _ = credentials.create_enrollment_token(db, uses=5)
        for i in range(5):
            tokens.append(
                enrollment.enroll_device(db, enrollment_secret=secret, device_id=f"dev_mig_{i}")["device_token"]
            )

    beats: list[tuple[float, float, int]] = []  # (sent, latency, status)
    with TestClient(create_app(settings)) as client:

        def beat_round() -> None:
            for token in tokens:
                sent = time.monotonic()
                answer = client.post(
                    "/v1/heartbeat", json={"status": "ok"}, headers={"Authorization": f"Bearer {token}"}
                )
                beats.append((sent, time.monotonic() - sent, answer.status_code))

        beat_round()
        report = engine.connect()
        try:
            # without the lock timeout the heartbeats below would hang: PostgreSQL ends the report after 20 s, so
            # that this test then fails on their latency instead of hanging
            report.execute(text("SET idle_in_transaction_session_timeout = '20s'"))
            report.execute(text("SELECT count(*) FROM devices"))  # a long read: ACCESS SHARE on devices
            upgrade = Cli(
                pg_url, "db", "upgrade", env=_env(lock_timeout_ms, retries=50, backoff_ms=300), scripts=scripts
            )
            waiting_from = time.monotonic()
            deadline = waiting_from + 40
            while upgrade.retries() < 3:
                assert time.monotonic() < deadline, f"no retries seen: {upgrade.stderr}"
                assert upgrade.proc.poll() is None, upgrade.stderr
                beat_round()
            assert upgrade.proc.poll() is None
            assert current_revision(engine) == head_revision()  # the migration is still waiting
            released = time.monotonic()
        finally:
            with contextlib.suppress(DBAPIError):  # ended by the server if the test failed
                report.rollback()
            report.close()
        assert upgrade.wait(60) == 0, upgrade.stderr
        beat_round()

    statuses = {status for _, _, status in beats}
    assert statuses <= {200, 201}, statuses
    latencies = sorted(latency for _, latency, _ in beats)
    # a heartbeat queued behind a waiting ALTER waits at most one lock timeout (plus a loaded machine's slack)
    assert latencies[-1] < lock_timeout_ms / 1000 + 2.0, latencies[-5:]
    during = [latency for sent, latency, _ in beats if waiting_from <= sent <= released]
    assert len(during) > 3 * len(tokens)  # heartbeats went on while the migration was waiting
    assert current_revision(engine) == "9001"
    with engine.connect() as conn:
        columns = conn.execute(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = 'devices'")
        ).scalars()
        assert "test_note" in set(columns)
        # the parent's index is valid once every partition's (built concurrently) is attached
        attached = conn.execute(
            text(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname = 'ix_device_heartbeats_test_status'"
            )
        ).scalar_one()
        partitions = conn.execute(
            text(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname = 'device_heartbeats'"
            )
        ).scalar_one()
    assert attached == partitions > 0
    assert _index_valid(engine, "ix_device_heartbeats_test_status") is True
    print(
        f"\nheartbeats={len(beats)} while_waiting={len(during)} waited_s={released - waiting_from:.1f} "
        f"max_latency_s={latencies[-1]:.3f} "
        f"p50_s={latencies[len(latencies) // 2]:.3f} retries={upgrade.retries()}"
    )
    engine.dispose()
