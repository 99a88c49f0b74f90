"""``nexmdm serve`` as a real process, and ``nexmdm simulate`` against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
from typer.testing import CliRunner

from core.settings import Settings
from nexmdm_cli.commands.demo import free_port, stop, wait_until_ready
from nexmdm_cli.main import app


def test_serve_and_simulate(settings: Settings, engine, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"NEXMDM_DATABASE_URL": settings.database_url, "NEXMDM_DATA_DIR": str(tmp_path)}
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


def test_simulate_with_fake_fcm_reports_push_latency(settings: Settings, engine, tmp_path) -> None:
    """--fcm: a local fake FCM, a worker pushing through it, devices acking on push, split nowhere."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"NEXMDM_DATABASE_URL": settings.database_url, "NEXMDM_DATA_DIR": str(tmp_path)}
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
            ["--database-url", settings.database_url, "simulate", "--devices", "5", "--duration", "8"]
            + ["--interval", "30", "--fcm", "--command-rate", "4", "--url", url, "--json"],
        )
    finally:
        stop(server)
        log.close()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    pushed = report["endpoints"]["FCM push (creation → device)"]
    acked = report["endpoints"]["ack (creation → stored)"]
    # devices beat every 30 s (at most once in 8 s, and poll every second beat): the acks came from pushes
    assert pushed["requests"] >= 3 and acked["requests"] >= 3
    assert report["commands_acked"] == acked["requests"]
    assert report["endpoints"]["GET /v1/commands/pending"]["requests"] >= pushed["requests"]


def test_simulate_in_several_processes_merges_their_figures(settings: Settings, engine, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"NEXMDM_DATABASE_URL": settings.database_url, "NEXMDM_DATA_DIR": str(tmp_path)}
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
            ["--database-url", settings.database_url, "simulate", "--devices", "9", "--duration", "2"]
            + ["--interval", "0.5", "--processes", "3", "--url", url, "--json"],
        )
    finally:
        stop(server)
        log.close()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["processes"] == 3 and report["enrolled"] == 9
    assert report["endpoints"]["POST /v1/enroll"]["requests"] == 9
    assert report["heartbeats"]["created"] >= 9 and report["errors_by_status"] == {}


def test_simulate_refuses_other_hosts() -> None:
    result = CliRunner().invoke(app, ["simulate", "--url", "http://example.com", "--enrollment-token", "nxe_x"])
    assert result.exit_code != 0
    assert "only targets this machine" in result.output
