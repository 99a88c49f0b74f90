"""``nexmdm serve`` as a real process, and ``nexmdm simulate`` against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
from sqlalchemy import make_url
from typer.testing import CliRunner

from core.settings import Settings
from nexmdm_cli.commands.demo import free_port, stop, wait_until_ready
from nexmdm_cli.main import app

USERINFO_SECRET = "pw-in-userinfo-7f3a"
QUERY_SECRET = "pw-in-query-91bc"


def with_passwords(database_url: str) -> str:
    """The same PostgreSQL database behind a URL that carries a password twice (trust auth ignores both)."""
    parsed = make_url(database_url)
    return parsed.set(password=USERINFO_SECRET, query={"password": QUERY_SECRET}).render_as_string(hide_password=False)


def test_serve_and_simulate(settings: Settings, engine, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database_url = settings.database_url
    if engine.dialect.name == "postgresql":
        database_url = with_passwords(database_url)
    # wide lines: the start-up line with the (masked) URL is read back whole
    env = os.environ | {"NEXMDM_DATABASE_URL": database_url, "NEXMDM_DATA_DIR": str(tmp_path), "COLUMNS": "400"}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", "from nexmdm_cli.main import run; run()", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ready(url, server)
        result = CliRunner().invoke(
            app,
            [
                "--database-url",
                settings.database_url,
                "simulate",
                "--devices",
                "10",
                "--duration",
                "2.5",
                "--interval",
                "0.5",
                "--url",
                url,
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["enrolled"] == 10
        assert report["heartbeats"]["created"] >= 10
        assert report["errors_by_status"] == {}
        assert report["endpoints"]["POST /v1/heartbeat"]["p99_ms"] is not None
        metrics = httpx.get(f"{url}/metrics").text
        assert 'path="/v1/heartbeat"' in metrics
        assert 'nexmdm_heartbeats_total{result="created"}' in metrics
    finally:
        stop(server)
        log.close()
    assert server.returncode is not None
    server_log = (tmp_path / "server.log").read_text()
    assert "nxd_" not in server_log and "nxe_" not in server_log
    masked = settings.database_url.split("://", 1)[0]
    assert masked in server_log
    assert USERINFO_SECRET not in server_log and QUERY_SECRET not in server_log
    if engine.dialect.name == "postgresql":  # the URL is shown, masked, not left out
        assert ":***@127.0.0.1" in server_log and "password=%2A%2A%2A" in server_log


def test_simulate_refuses_other_hosts() -> None:
    result = CliRunner().invoke(app, ["simulate", "--url", "http://example.com", "--enrollment-token", "nxe_x"])
    assert result.exit_code != 0
    assert "only targets this machine" in result.output
