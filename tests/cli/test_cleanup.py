"""``nexmdm cleanup``: dry run deletes nothing, real run deletes what is past retention, a held lock exits 75."""

from __future__ import annotations

import json
import logging
import socket
import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from core.models import ApkDownloadEvent, AuditEvent, DeviceHeartbeat, FcmDispatch
from core.ops.locks import maintenance_lock
from nexmdm_cli.errors import EXIT_LOCKED
from tests.support.cli import Cli, count, one_error_line, seed_dispatch, seed_download, seed_heartbeat
from tests.support.databases import add_device

OLD = timedelta(days=400)


@pytest.fixture
def seeded(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Per entity: old rows past every default retention, and recent rows."""
    add_device(session_factory, "dev_001")
    seed_heartbeat(session_factory, "dev_001", OLD, battery_pct=40)
    seed_heartbeat(session_factory, "dev_001", OLD - timedelta(minutes=1), battery_pct=41)
    seed_heartbeat(session_factory, "dev_001", timedelta(hours=1), battery_pct=90)
    seed_dispatch(session_factory, "old-acked", ago=OLD, status="acked")
    seed_dispatch(session_factory, "old-pending", ago=OLD)  # never deleted: not finished
    seed_dispatch(session_factory, "new-acked", ago=timedelta(days=1), status="acked")
    seed_download(session_factory, ago=OLD)
    seed_download(session_factory, ago=timedelta(days=1))
    return session_factory


def _counts(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    return count(factory, DeviceHeartbeat), count(factory, FcmDispatch), count(factory, ApkDownloadEvent)


def test_dry_run_counts_and_deletes_nothing(cli: Cli, seeded: sessionmaker[Session]) -> None:
    data = cli.json("cleanup", "--dry-run")
    assert data["dry_run"] is True
    assert {entity: r["would_delete"] for entity, r in data["results"].items()} == {
        "device_heartbeats": 2,
        "fcm_dispatches": 1,
        "apk_download_events": 1,
        "campaigns": 0,
        "audit_events": 0,
        "webhook_outbox": 0,
        "device_app_changes": 0,
        "device_locations": 0,
        "approvals": 0,
        "console_sessions": 0,
    }
    assert _counts(seeded) == (3, 3, 2)

    table = cli("cleanup", "--dry-run")
    assert table.exit_code == 0
    assert "would delete" in table.stdout and "nothing deleted" in table.stdout
    assert _counts(seeded) == (3, 3, 2)


def test_cleanup_deletes_past_retention_only(cli: Cli, seeded: sessionmaker[Session]) -> None:
    result = cli("cleanup")
    assert result.exit_code == 0, result.stderr
    for entity in ("device_heartbeats", "fcm_dispatches", "apk_download_events"):
        assert entity in result.stdout
    assert "Cleaning up" in result.stderr
    assert _counts(seeded) == (1, 2, 1)
    with seeded() as db:
        assert {d.request_id for d in db.query(FcmDispatch)} == {"old-pending", "new-acked"}


def test_per_entity_overrides(cli: Cli, seeded: sessionmaker[Session]) -> None:
    data = cli.json("cleanup", "--heartbeats-days", "0", "--dispatches-days", "0", "--downloads-days", "1000")
    assert data["results"]["device_heartbeats"]["deleted"] == 3
    assert data["results"]["fcm_dispatches"]["deleted"] == 2  # the pending one stays whatever its age
    assert data["results"]["apk_download_events"]["deleted"] == 0
    assert _counts(seeded) == (0, 1, 2)


def test_negative_days_is_a_usage_error(cli: Cli) -> None:
    assert cli("cleanup", "--heartbeats-days", "-1").exit_code == 2


def test_a_held_lock_exits_75_and_deletes_nothing(cli: Cli, seeded: sessionmaker[Session], engine: Engine) -> None:
    with maintenance_lock(engine) as acquired:
        assert acquired
        result = cli("cleanup", "--json")
        assert result.exit_code == EXIT_LOCKED
        line = one_error_line(result)
        assert "another cleanup" in line
        if engine.dialect.name == "postgresql":  # the lease names its holder: which node, which process
            assert f"({socket.gethostname()[:20]}" in line and ":cleanup:" in line
        assert _counts(seeded) == (3, 3, 2)
    # once released, the next run goes ahead
    after = cli("cleanup", "--json")
    assert after.exit_code == 0, after.stderr
    assert json.loads(after.stdout)["results"]["device_heartbeats"]["deleted"] == 2


@pytest.mark.parametrize("backend", ["postgresql"])  # a flock beside the SQLite file is never lost
def test_a_cleanup_that_loses_its_lease_exits_75_before_its_next_batch(
    cli_env: dict[str, str],
    database_url: str,
    seeded: sessionmaker[Session],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stalled cleanup whose lease passed to another node stops instead of deleting beside it."""
    from sqlalchemy import update

    from core.models.lease import Lease
    from core.ops import locks
    from core.storage.types import utcnow

    for i in range(5):
        seed_dispatch(seeded, f"old-acked-{i}", ago=OLD, status="acked")
    monkeypatch.setattr(locks, "LEASE_SECONDS", 3.0)  # renewed every second: the loss is seen within one
    lost = threading.Event()
    steps: list[str] = []

    class TakeTheLeaseAway(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("lease_lost"):
                lost.set()
            if not message.startswith("cleanup_batch"):
                return
            steps.append(message)
            if "entity=fcm_dispatches" in message and "lease taken away" not in steps:
                with seeded.begin() as db:  # its lease ran out during a pause and another node took it
                    db.execute(
                        update(Lease)
                        .where(Lease.name == "maintenance:cleanup")
                        .values(holder="other-node", expires_at=utcnow() + timedelta(hours=1))
                    )
                lost.wait(5)  # the holder's next renewal finds it gone
                steps.append("lease taken away")

    caplog.set_level(logging.INFO, logger="nexmdm.cleanup")
    handler = TakeTheLeaseAway()
    for name in ("nexmdm.cleanup", "nexmdm.leases"):
        logging.getLogger(name).addHandler(handler)
    try:
        result = Cli(database_url, cli_env | {"NEXMDM_CLEANUP_BATCH_SIZE": "2"})("cleanup", "--json")
    finally:
        for name in ("nexmdm.cleanup", "nexmdm.leases"):
            logging.getLogger(name).removeHandler(handler)
    assert result.exit_code == EXIT_LOCKED, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after the "Cleaning up" note: one error line, no traceback
    assert last.startswith("error:") and "passed to another holder" in last and "Traceback" not in result.stderr
    assert steps[-1] == "lease taken away"  # no batch after it
    assert count(seeded, FcmDispatch) == 8 - 2  # one batch of 2 of the 6 old acked ones went
    # what it deleted before it stopped is on the record, and why it stopped
    with seeded() as db:
        rows = list(db.execute(select(AuditEvent).where(AuditEvent.action == "retention.cleanup")).scalars())
    assert len(rows) == 1 and rows[0].details["stopped"] == "lock_lost"
    assert rows[0].details["deleted"]["fcm_dispatches"] == 2


def test_unmigrated_database_exits_5(fresh_cli: Cli) -> None:
    result = fresh_cli("cleanup")
    assert result.exit_code == 5
    assert "nexmdm db upgrade" in one_error_line(result)
