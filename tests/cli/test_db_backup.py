"""``nexmdm db backup`` / ``db restore`` on both databases: round trips, a backup under load, refusals."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from core.base.settings import Settings
from core.enrollment import tokens as credentials
from core.models import AuditEvent, Device
from core.storage.engine import make_engine, make_session_factory
from core.storage.schema_version import head_revision
from tests.support.cli import Cli, one_error_line
from tests.support.databases import migrate


def _devices(url: str) -> list[str]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT id FROM devices ORDER BY id")).scalars())
    finally:
        engine.dispose()


def _add_devices(url: str, *ids: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        with make_session_factory(engine).begin() as db:
            db.add_all(Device(id=device) for device in ids)
    finally:
        engine.dispose()


def _actions(url: str) -> list[str]:
    engine = make_engine(url, pool_size=1)
    try:
        with make_session_factory(engine)() as db:
            return list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    finally:
        engine.dispose()


def test_backup_then_restore_brings_the_rows_back(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _add_devices(cli.url, "dev_a", "dev_b")
    path = tmp_path / "nexmdm.backup"

    made = cli.json("db", "backup", str(path))

    assert made["revision"] == head_revision() and made["size_bytes"] == path.stat().st_size > 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "nexmdm.backup.partial").exists()
    assert _actions(cli.url)[-1:] == ["db.backup"]  # written after the copy: not in the backup itself
    _add_devices(cli.url, "dev_c")
    engine.dispose()  # the test's own pool is another user of the database

    restored = cli("db", "restore", str(path), "--yes", "--json")

    assert restored.exit_code == 0, restored.stderr
    assert _devices(cli.url) == ["dev_a", "dev_b"]
    assert _actions(cli.url) == ["db.restore"]
    assert cli("schema", "check").exit_code == 0


def test_restore_asks_first_and_an_existing_file_is_replaced_only_when_confirmed(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "b"
    path.write_bytes(b"old")
    refused = cli("db", "backup", str(path), input="n\n")
    assert refused.exit_code == 1 and path.read_bytes() == b"old"
    assert cli("db", "backup", str(path), input="y\n").exit_code == 0
    engine.dispose()
    _add_devices(cli.url, "dev_kept")

    declined = cli("db", "restore", str(path), input="n\n")

    assert declined.exit_code == 1 and "Replace every row" in declined.stderr
    assert _devices(cli.url) == ["dev_kept"]


def test_a_database_in_use_is_refused_unless_yes(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "b"
    assert cli("db", "backup", str(path)).exit_code == 0
    _add_devices(cli.url, "dev_late")
    engine.dispose()
    holder = _hold_open(cli.url)
    try:
        refused = cli("db", "restore", str(path))
        assert refused.exit_code == 4
        assert "is in use by other" in one_error_line(refused)
        assert _devices(cli.url) == ["dev_late"]

        forced = cli("db", "restore", str(path), "--yes")
        assert forced.exit_code == 0, forced.stderr
    finally:
        holder.terminate()
        holder.wait(10)
    assert _devices(cli.url) == []


def _hold_open(url: str) -> subprocess.Popen[bytes]:
    """Another process with a connection open on the database (as a running server has)."""
    code = (
        "import sys, time; from sqlalchemy import text; from core.storage.engine import make_engine; "
        "e = make_engine(sys.argv[1], pool_size=1); c = e.connect(); c.execute(text('SELECT 1')); c.commit(); "
        "print('ready', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


@pytest.mark.parametrize("damage", ["truncated", "foreign", "empty", "missing"])
def test_a_bad_backup_file_is_one_line_and_changes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path, damage: str
) -> None:
    _add_devices(cli.url, *(f"dev_{i:04d}" for i in range(3000)))  # data past the archive's table of contents
    path = tmp_path / "b"
    assert cli("db", "backup", str(path)).exit_code == 0
    _add_devices(cli.url, "dev_after")
    engine.dispose()
    whole = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(whole[: len(whole) * 3 // 4])
    elif damage == "foreign":
        path.write_bytes(b"%PDF-1.7\n" + whole[9:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()

    result = cli("db", "restore", str(path), "--yes")

    assert result.exit_code == 2, result.stderr
    assert str(path) in one_error_line(result)
    assert len(_devices(cli.url)) == 3001


def test_a_backup_from_a_newer_nexmdm_is_refused(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    path = tmp_path / "b"
    try:
        assert cli("db", "backup", str(path)).exit_code == 0
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head_revision()})
    engine.dispose()

    result = cli("db", "restore", str(path), "--yes")

    assert result.exit_code == 2
    assert "comes from a newer NexMDM (migration 9999_from_the_future" in one_error_line(result)


def test_a_backup_of_an_older_schema_restores_and_offers_the_upgrade(
    fresh_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    migrate(fresh_url, "0001")
    old = Cli(fresh_url, cli_env)
    path = tmp_path / "b"
    assert old("db", "backup", str(path)).exit_code == 0
    migrate(fresh_url)

    result = old("db", "restore", str(path), "--yes")

    assert result.exit_code == 0, result.stderr
    assert "run `nexmdm db upgrade`" in result.stderr
    assert old.json("db", "current")["current"] == "0001"
    assert old("db", "upgrade").exit_code == 0
    assert old("schema", "check").exit_code == 0


def test_a_backup_under_load_holds_every_row_acknowledged_before_it_began(
    cli: Cli, engine: Engine, fresh_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _add_devices(cli.url, *(f"seed_{i:05d}" for i in range(5000)))  # so that the copy takes a while
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        writes = make_engine(cli.url, pool_size=1)
        factory = make_session_factory(writes, Settings(database_url=cli.url, data_dir=tmp_path))
        i = 0
        while not stop.is_set():
            with factory.begin() as db:
                db.add(Device(id=f"load_{i:06d}"))
                credentials.create_enrollment_token(db, uses=1)
            acknowledged.append(f"load_{i:06d}")  # the commit returned: this row was acknowledged
            i += 1
        writes.dispose()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        before = list(acknowledged)
        path = tmp_path / "b"
        made = cli("db", "backup", str(path))
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(30)
    assert made.exit_code == 0, made.stderr
    assert len(acknowledged) > len(before) > 0  # the writes went on during the backup

    target = fresh_url  # an empty database (PostgreSQL), a file not yet made (SQLite)
    restored = Cli(target, cli_env)("db", "restore", str(path), "--yes")

    assert restored.exit_code == 0, restored.stderr
    rows = set(_devices(target))
    assert set(before) <= rows
    loaded = sorted(r for r in rows if r.startswith("load_"))
    assert loaded == acknowledged[: len(loaded)]  # a prefix of the commits: one consistent moment
    assert Cli(target, cli_env)("schema", "check").exit_code == 0


def test_without_yes_the_upgrade_of_an_older_backup_is_offered(
    fresh_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    migrate(fresh_url, "0001")
    old = Cli(fresh_url, cli_env)
    path = tmp_path / "b"
    assert old("db", "backup", str(path)).exit_code == 0

    result = old("db", "restore", str(path), input="y\ny\n")

    assert result.exit_code == 0, result.stderr
    assert "Upgrade it now?" in result.stderr
    assert old.json("db", "current")["current"] == head_revision()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_restore_that_the_server_refuses_halfway_changes_nothing(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    _add_devices(cli.url, *(f"dev_{i:03d}" for i in range(300)))
    path = tmp_path / "b"
    assert cli("db", "backup", str(path)).exit_code == 0
    _add_devices(cli.url, "dev_after")
    guard = (  # the server refuses the restore's CREATE TABLE after its DROP SCHEMA has run
        "CREATE SCHEMA guard;"
        "CREATE FUNCTION guard.refuse() RETURNS event_trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'no new tables today'; END$$;"
        "CREATE EVENT TRIGGER refuse_tables ON ddl_command_start WHEN TAG IN ('CREATE TABLE') "
        "EXECUTE FUNCTION guard.refuse()"
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(guard)
    engine.dispose()
    try:
        result = cli("db", "restore", str(path), "--yes")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP EVENT TRIGGER refuse_tables; DROP SCHEMA guard CASCADE")

    assert result.exit_code == 5 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "error: the restore failed, nothing changed: ERROR:  no new tables today"
    assert len(_devices(cli.url)) == 301
