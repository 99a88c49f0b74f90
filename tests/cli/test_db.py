"""``nexmdm db``: Alembic through the CLI, from any folder, on both databases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from core.storage import migrations
from core.storage.engine import make_engine, mask_url, sqlite_file
from core.storage.migrations import head_revision
from tests.support.cli import Cli, one_error_line


def test_upgrade_from_another_folder_then_current(
    fresh_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if sqlite_file(fresh_cli.url) is None:
        assert fresh_cli.json("db", "current")["current"] is None
    else:  # a missing SQLite file is not created by a read-only command (issue #11)
        assert "no database at" in one_error_line(fresh_cli("db", "current"))

    result = fresh_cli("db", "upgrade")

    assert result.exit_code == 0, result.stderr
    assert "Upgrading" in result.stderr and "Running upgrade" in result.stderr
    assert result.stdout == ""
    current = fresh_cli.json("db", "current")
    assert current == {
        "database": current["database"],
        "current": head_revision(),
        "head": head_revision(),
        "up_to_date": True,
    }
    engine = make_engine(fresh_cli.url)
    assert {"devices", "device_heartbeats", "fcm_dispatches"} <= set(inspect(engine).get_table_names())
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite URLs carry no password
def test_upgrade_names_the_database_with_the_password_masked(fresh_url: str, cli_env: dict) -> None:
    url = fresh_url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores the password
    result = Cli(url, cli_env)("db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "postgres:***@127.0.0.1" in result.stderr


def test_downgrade_asks_first_and_yes_skips_the_question(fresh_cli: Cli) -> None:
    assert fresh_cli("db", "upgrade").exit_code == 0

    refused = fresh_cli("db", "downgrade", "base", input="n\n")
    assert refused.exit_code == 1
    assert "Downgrade" in refused.stderr
    assert fresh_cli.json("db", "current")["current"] == head_revision()

    done = fresh_cli("db", "downgrade", "base", "--yes")
    assert done.exit_code == 0, done.stderr
    assert fresh_cli.json("db", "current")["current"] is None
    engine = make_engine(fresh_cli.url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()

    confirmed = fresh_cli("db", "upgrade")
    assert confirmed.exit_code == 0
    answered = fresh_cli("db", "downgrade", "-1", input="y\n")
    assert answered.exit_code == 0, answered.stderr
    assert fresh_cli.json("db", "current")["current"] != head_revision()


def test_history_marks_head_and_current(cli: Cli) -> None:
    data = cli.json("db", "history")
    heads = [item for item in data["items"] if item["is_head"]]
    assert [h["revision"] for h in heads] == [head_revision()]
    assert heads[0]["is_current"] is True
    assert data["items"][-1]["down_revision"] is None  # newest first, the first migration last

    table = cli("db", "history")
    assert table.exit_code == 0
    assert head_revision() in table.stdout and "current" in table.stdout


def test_current_table_says_not_migrated(fresh_cli: Cli) -> None:
    path = sqlite_file(fresh_cli.url)
    if path is not None:  # an empty SQLite file: what an older version of `db current` left behind
        path.touch()
    result = fresh_cli("db", "current")
    assert result.exit_code == 0
    assert "not migrated" in result.stdout and "nexmdm db upgrade" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ("db", "current"),
        ("db", "check"),
        ("db", "downgrade", "base", "--yes"),
        ("schema", "check"),
        ("devices", "list"),
        ("devices", "show", "x"),
        ("dispatches", "stats"),
        ("dispatches", "list"),
        ("heartbeats", "show", "x"),
        ("tokens", "list"),
        ("keys", "list"),
        ("apk", "list"),
        ("apk", "downloads"),
        ("cleanup", "--dry-run"),
    ],
)
def test_read_only_commands_never_create_a_missing_sqlite_file(
    command: tuple[str, ...], cli_env: dict, tmp_path: Path
) -> None:
    """Issue #11 item 13: `nexmdm db current` against a missing path created an empty database there."""
    path = tmp_path / "nowhere" / "nexmdm.db"
    result = Cli(f"sqlite:///{path}", cli_env)(*command)
    assert result.exit_code == 5, result.stderr
    assert f"no database at {path}" in one_error_line(result)
    assert not path.exists() and not path.parent.exists()
    history = Cli(f"sqlite:///{path}", cli_env).json("db", "history")  # needs no database
    assert history["items"] and not path.exists()


def test_check_passes_when_models_and_migrations_agree(cli: Cli) -> None:
    result = cli("db", "check")
    assert result.exit_code == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout


def test_check_fails_when_the_database_differs(fresh_cli: Cli) -> None:
    assert fresh_cli("db", "upgrade").exit_code == 0
    engine = make_engine(fresh_cli.url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
    engine.dispose()

    result = fresh_cli("db", "check")

    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "models and migrations differ" in errors[0] and "stray" in errors[0]


def test_upgrade_to_an_unknown_revision_is_one_line(fresh_cli: Cli) -> None:
    result = fresh_cli("db", "upgrade", "nope")
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0]
    assert "Traceback" not in result.stderr


def test_unreachable_database_exits_5(cli_env: dict) -> None:
    result = Cli("postgresql://nobody@127.0.0.1:1/x", cli_env)("db", "current")
    assert result.exit_code == 5
    assert "127.0.0.1" in one_error_line(result)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_revision_writes_a_migration_file(
    migrated_fresh_url: str, cli_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # never write into the repository's migrations: work on a copy of them
    scripts = tmp_path / "migrations"
    shutil.copytree(migrations.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "script_location", lambda: scripts)
    cli = Cli(migrated_fresh_url, cli_env)

    auto = cli("db", "revision", "-m", "nothing to do", "--autogenerate")  # needs the database at head
    empty = cli("db", "revision", "-m", "add widgets")

    assert empty.exit_code == 0, empty.stderr
    assert auto.exit_code == 0, auto.stderr
    created = Path(empty.stdout.strip())
    assert created.parent == scripts / "versions" and created.name.endswith("_add_widgets.py")
    assert "add widgets" in created.read_text()
    assert Path(auto.stdout.strip()).is_file()
    assert cli("db", "revision").exit_code == 2  # -m is required


def test_a_password_in_the_query_string_is_masked(cli_env: dict) -> None:
    """Issue #11 item 10: `--database-url 'postgresql://u@h/db?password=S' db current` printed S."""
    result = Cli("postgresql://nobody@127.0.0.1:1/x?password=TOPSECRET42&sslmode=disable", cli_env)("db", "current")
    assert result.exit_code == 5
    line = one_error_line(result)
    assert "TOPSECRET42" not in result.stderr + result.stdout
    assert "password=%2A%2A%2A" in line and "sslmode=disable" in line
    masked = mask_url("postgresql://u:pw@h/db?PassWord=s3cr3t&sslpassword=k3y")
    assert "s3cr3t" not in masked and "k3y" not in masked and "pw" not in masked
