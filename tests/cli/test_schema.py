"""``nexmdm schema check``: passes on a migrated database, names every hand-made difference."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from core.storage.engine import make_engine, sqlite_file
from core.storage.migrations import head_revision
from tests.support.cli import Cli

PASSED = "✅ Schema validation passed!"


def _execute(url: str, *statements: str) -> None:
    engine = make_engine(url, sqlite_foreign_keys=False)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def _problems(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("❌")]


def test_migrated_database_passes(cli: Cli) -> None:
    result = cli("schema", "check")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.strip() == PASSED
    assert cli.url.split("/")[-1] in result.stderr  # which database was checked
    assert cli.json("schema", "check")["ok"] is True


def test_dropped_index_is_named(migrated_fresh_url: str, cli_env: dict) -> None:
    _execute(migrated_fresh_url, "DROP INDEX ix_devices_last_seen_at")
    result = Cli(migrated_fresh_url, cli_env)("schema", "check")
    assert result.exit_code == 1
    assert _problems(result) == ["❌ missing index ix_devices_last_seen_at (devices: last_seen_at)"]
    assert PASSED not in result.stdout


def test_dropped_column_is_named(migrated_fresh_url: str, cli_env: dict) -> None:
    _execute(migrated_fresh_url, "ALTER TABLE devices DROP COLUMN model")
    result = Cli(migrated_fresh_url, cli_env)("schema", "check")
    assert result.exit_code == 1
    assert _problems(result) == ["❌ missing column devices.model"]


def test_dropped_unique_constraint_is_named(backend: str, migrated_fresh_url: str, cli_env: dict) -> None:
    if backend == "postgresql":
        _execute(migrated_fresh_url, "ALTER TABLE admin_keys DROP CONSTRAINT uq_admin_keys_name")
    else:  # SQLite cannot drop a constraint: rebuild the table without it
        _execute(
            migrated_fresh_url,
            "CREATE TABLE admin_keys_new (id VARCHAR(32) NOT NULL, name VARCHAR(64) NOT NULL, "
            "key_hash VARCHAR(64) NOT NULL, role VARCHAR(16) DEFAULT 'admin' NOT NULL, "
            "created_at DATETIME NOT NULL, revoked_at DATETIME, "
            "last_used_at DATETIME, expires_at DATETIME, scope VARCHAR(1024), "
            "CONSTRAINT pk_admin_keys PRIMARY KEY (id), UNIQUE (key_hash))",
            "DROP TABLE admin_keys",
            "ALTER TABLE admin_keys_new RENAME TO admin_keys",
        )
    result = Cli(migrated_fresh_url, cli_env)("schema", "check")
    assert result.exit_code == 1
    problems = _problems(result)
    assert len(problems) == 1 and "unique constraint" in problems[0] and "admin_keys: name" in problems[0]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_type_and_nullability_changes_are_named(migrated_fresh_url: str, cli_env: dict) -> None:
    _execute(
        migrated_fresh_url,
        "ALTER TABLE devices ALTER COLUMN os_version SET NOT NULL",
        "ALTER TABLE devices ALTER COLUMN last_status TYPE text",
    )
    result = Cli(migrated_fresh_url, cli_env)("schema", "check")
    assert result.exit_code == 1
    problems = "\n".join(_problems(result))
    assert "devices.os_version should allow NULL" in problems
    assert "type of devices.last_status is TEXT" in problems


@pytest.mark.parametrize("backend", ["postgresql"])
def test_partitions_and_alembic_version_are_ignored(migrated_fresh_url: str, cli_env: dict) -> None:
    _execute(
        migrated_fresh_url,
        "CREATE TABLE scratch (at date NOT NULL) PARTITION BY RANGE (at)",
        "CREATE TABLE scratch_2026 PARTITION OF scratch FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    )
    result = Cli(migrated_fresh_url, cli_env)("schema", "check")
    assert _problems(result) == ["❌ unexpected table (not in the models) scratch"]


def test_unmigrated_database_lists_missing_tables_and_migration(fresh_cli: Cli) -> None:
    path = sqlite_file(fresh_cli.url)
    if path is not None:  # an empty file (a missing one is "no database at ...")
        path.touch()
    result = fresh_cli("schema", "check", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    kinds = {p["kind"] for p in data["problems"]}
    assert kinds == {"add_table", "migration"}  # a missing table's indexes are not listed again
    assert {p["table"] for p in data["problems"] if p["kind"] == "add_table"} >= {"devices", "fcm_dispatches"}
    migration = next(p for p in data["problems"] if p["kind"] == "migration")
    assert head_revision() in migration["problem"]


def test_database_behind_the_head_is_a_problem(fresh_cli: Cli) -> None:
    assert fresh_cli("db", "upgrade", "0001").exit_code == 0
    result = fresh_cli("schema", "check")
    assert result.exit_code == 1
    assert any("database at migration 0001" in line for line in _problems(result))
