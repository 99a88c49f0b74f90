"""``nexmdm serve`` as a real process, and ``nexmdm simulate`` against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url, text
from typer.testing import CliRunner

from core.base.settings import Settings
from nexmdm_cli.commands.demo import free_port, stop, wait_until_ready
from nexmdm_cli.main import app

USERINFO_SECRET = "pw-in-userinfo-7f3a"
QUERY_SECRET = "pw-in-query-91bc"


def with_passwords(database_url: str) -> str:
    """The same PostgreSQL database behind a URL that carries a password twice (trust auth ignores both)."""
    parsed = make_url(database_url)
    return parsed.set(password=USERINFO_SECRET, query={"password": QUERY_SECRET}).render_as_string(hide_password=False)


@pytest.mark.slow
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
        assert report["endpoints"]["PUT /v1/inventory"]["requests"] >= 10  # each asked once ("wanted")
        with engine.connect() as conn:  # the reference agent's inventories arrived whole
            assert conn.execute(text("SELECT count(*) FROM device_inventory")).scalar_one() == 10
            assert 500 <= conn.execute(text("SELECT count(*) FROM device_apps")).scalar_one() <= 3000
        metrics = httpx.get(f"{url}/metrics").text
        assert 'path="/v1/heartbeat"' in metrics
        assert 'nexmdm_heartbeats_total{result="created"}' in metrics
    finally:
        stop(server)
        log.close()
    assert server.returncode is not None
    server_log = (tmp_path / "server.log").read_text()
    assert "nxd_" not in server_log and "nxe_" not in server_log
    assert "com.acme" not in server_log and "sim-1.0" not in server_log  # no inventory value is ever logged
    masked = settings.database_url.split("://", 1)[0]
    assert masked in server_log
    assert USERINFO_SECRET not in server_log and QUERY_SECRET not in server_log
    if engine.dialect.name == "postgresql":  # the URL is shown, masked, not left out
        assert ":***@127.0.0.1" in server_log and "password=%2A%2A%2A" in server_log


@pytest.mark.slow
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


@pytest.mark.slow
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


class Server:
    """``nexmdm serve`` in a subprocess on a free port, its output in a log file."""

    def __init__(self, database_url: str, tmp_path: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"server-{self.port}.log"
        environment = os.environ | {"NEXMDM_DATABASE_URL": database_url, "NEXMDM_DATA_DIR": str(tmp_path)} | env
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from nexmdm_cli.main import run; run()", "serve", "--port", str(self.port)]
                + list(args),
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> Server:
        wait_until_ready(self.url, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.process)


def _guess(url: str, forwarded_for: str | None) -> int:
    headers = {"Authorization": "Bearer nxa_" + "z" * 43}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.get(f"{url}/v1/devices", headers=headers, timeout=10).status_code


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(database_url: str, engine, tmp_path: Path) -> None:
    """The failed-auth limiter keys on the client behind a trusted proxy (uvicorn's forwarded-allow-ips,
    127.0.0.1 by default), and on the peer itself when the proxy is not trusted."""
    with Server(database_url, tmp_path, NEXMDM_AUTH_FAILURE_LIMIT="2") as server:
        assert [_guess(server.url, "203.0.113.9") for _ in range(3)] == [401, 401, 429]
        assert _guess(server.url, "198.51.100.7") == 401  # another client behind the same proxy
        assert _guess(server.url, None) == 401  # and the proxy itself
    with Server(database_url, tmp_path, NEXMDM_AUTH_FAILURE_LIMIT="2", FORWARDED_ALLOW_IPS="10.9.9.9") as server:
        # the peer (127.0.0.1) is not a trusted proxy here: the header is ignored, every guess is the peer's
        codes = [_guess(server.url, f"203.0.113.{i}") for i in range(3)]
        assert codes == [401, 401, 429]


def _sample(metrics: str, name: str, **labels: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_metrics_are_summed_across_workers(database_url: str, engine, tmp_path: Path) -> None:
    """With --workers 2, whichever worker answers /metrics reports every worker's requests."""
    samples = tmp_path / "prometheus"  # each worker writes its own files here (prometheus_client multiprocess)
    samples.mkdir()
    with Server(database_url, tmp_path, "--workers", "2", PROMETHEUS_MULTIPROC_DIR=str(samples)) as server:
        sent = 0
        # one connection per request, so that both workers take some, until both have counted
        while sent < 40 or (len(list(samples.glob("counter_*.db"))) < 2 and sent < 400):
            response = httpx.get(f"{server.url}/healthz", headers={"Connection": "close"}, timeout=10)
            assert response.status_code == 200
            sent += 1
        assert len(list(samples.glob("counter_*.db"))) >= 2, "one worker answered every request"
        for _ in range(4):  # whichever worker answers the scrape
            metrics = httpx.get(f"{server.url}/metrics", headers={"Connection": "close"}, timeout=10).text
            assert _sample(metrics, "nexmdm_requests_total", path="/healthz", status_code="200") == sent
