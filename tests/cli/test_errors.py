"""The failure contract: one red line on stderr, a documented exit code, never a traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.storage.engine import sqlite_file
from nexmdm_cli.main import app
from tests.support.cli import Cli, one_error_line

#: commands that read or write the fleet's data (they need a reachable, migrated database)
DATA_COMMANDS = [
    ["devices", "list"],
    ["devices", "show", "dev_001"],
    ["heartbeats", "show", "dev_001"],
    ["dispatches", "stats"],
    ["dispatches", "list"],
    ["tokens", "list"],
    ["tokens", "create"],
    ["keys", "list"],
    ["apk", "list"],
    ["apk", "downloads"],
    ["cleanup", "--dry-run"],
]
UNREACHABLE = "postgresql://nobody:hunter2-userinfo@127.0.0.1:1/x?password=hunter3-query"


@pytest.mark.parametrize(
    "args",
    [
        *([*command, "--json"] for command in DATA_COMMANDS),
        ["db", "current"],
        ["db", "upgrade"],
        ["db", "downgrade", "base", "--yes"],
        ["db", "check"],
        ["schema", "check"],
    ],
    ids=" ".join,
)
def test_unreachable_database(args: list[str], cli_env: dict) -> None:
    result = Cli(UNREACHABLE, cli_env)(*args)
    assert result.exit_code == 5
    line = one_error_line(result)
    assert "127.0.0.1" in line and "nobody:***@" in line
    assert "hunter2" not in result.output and "hunter3" not in result.output  # neither password, anywhere


@pytest.mark.parametrize("args", DATA_COMMANDS, ids=" ".join)
def test_unmigrated_database(args: list[str], fresh_cli: Cli) -> None:
    path = sqlite_file(fresh_cli.url)
    if path is not None:  # an empty file: a missing one is "no database at ..." (tests/cli/test_db.py)
        path.touch()
    result = fresh_cli(*args)
    assert result.exit_code == 5
    assert "not migrated: run `nexmdm db upgrade`" in one_error_line(result)


def test_malformed_database_url(cli_env: dict) -> None:
    result = Cli("not a url", cli_env)("devices", "list")
    assert result.exit_code == 2
    assert "invalid database URL" in one_error_line(result)


def test_database_url_from_the_environment(database_url: str, engine: object) -> None:
    result = CliRunner().invoke(app, ["devices", "list", "--json"], env={"NEXMDM_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("{")


def test_json_output_is_one_document_and_nothing_else(cli: Cli) -> None:
    for args in (["tokens", "create"], ["cleanup"], ["schema", "check"], ["db", "history"]):
        result = cli(*args, "--json")
        assert result.exit_code == 0, (args, result.stderr)
        json.loads(result.stdout)  # would fail on anything before or after the document


@pytest.mark.parametrize("args", [[], ["db"], ["devices"], ["cleanup"], ["tokens", "create"]], ids=str)
def test_short_help_everywhere(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "-h"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_is_exit_130_with_one_line(cli_env: dict, tmp_path) -> None:
    """SIGINT while a command runs: one line, exit 130 (as shells report it), no traceback."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as silent:  # accepts the connection and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-c", "from nexmdm_cli.main import run; run()", "--database-url", "sqlite:///"]
            + ["simulate", "--devices", "1", "--duration", "60", "--url", f"http://127.0.0.1:{port}"]
            + ["--enrollment-token", "nxe_" + "x" * 43],
            env=os.environ | cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # a terminal's Ctrl-C, whatever an earlier test left in this process: a child inherits an ignored or
            # blocked SIGINT, and Python then installs no handler for it (seen in the whole suite's run)
            preexec_fn=_default_sigint,
        )
        try:
            silent.settimeout(60)
            connection, _ = silent.accept()  # the command is running (enrolling): interrupt it now
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
            connection.close()
        finally:
            process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in stderr
