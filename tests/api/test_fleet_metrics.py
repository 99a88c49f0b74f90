"""Fleet-state gauges on ``/metrics``: computed by the maintenance loop, one value per series across
workers, every NexMDM metric with HELP, a unit suffix and a line in docs/metrics.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from nexmdm_api import create_app
from nexmdm_api.fleet_metrics import FleetGauges
from nexmdm_cli.commands.demo import free_port, stop, wait_until_ready
from tests.support.cli_fleet import EXPECTED, EXPECTED_CAMPAIGNS, seed_campaigns, seed_fleet, seed_labels
from tests.support.livemetrics import helps, samples, until, value

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
#: a metric's name ends with its unit: a base unit, a counted thing, or _total for a counter
UNITS = (
    *("_seconds", "_bytes", "_ratio", "_total", "_info"),
    *("_devices", "_commands", "_beats", "_requests", "_campaigns", "_targets", "_deliveries", "_keys"),
)
#: names given by libraries, documented as such
LIBRARY_NAMES = {"nexmdm_requests_in_progress"}  # Litestar's: requests being served
#: created by a library at their first sample (Litestar's count of requests that raised): documented, and
#: served only once it happened (another test's 500 in the same process may have created it already)
LAZY_NAMES = {"nexmdm_requests_error_total"}


def _fleet_matches(text: str) -> bool:
    return (
        all(
            value(text, "nexmdm_fleet_devices", state=state) == count
            for state, count in EXPECTED["devices"].items()
            if state != "total"
        )
        and value(text, "nexmdm_fleet_pending_commands") == EXPECTED["pending_now"]
    )


def test_gauges_from_the_maintenance_loop(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    seed_fleet(session_factory)
    with TestClient(create_app(settings)) as client:
        text = until(lambda: client.get("/metrics").text, _fleet_matches)
    for status, count in EXPECTED["commands_last_hour"].items():
        assert value(text, "nexmdm_fleet_commands", status=status) == count
    assert value(text, "nexmdm_fleet_went_offline_devices") == len(EXPECTED["went_offline"])
    assert value(text, "nexmdm_readiness_failing_seconds") == 0
    # no profile yet: nothing is asked of the unrevoked devices
    unrevoked = EXPECTED["devices"]["total"] - EXPECTED["devices"]["revoked"]
    assert value(text, "nexmdm_fleet_compliance_devices", state="compliant") == unrevoked
    assert value(text, "nexmdm_fleet_compliance_devices", state="noncompliant") == 0
    assert value(text, "nexmdm_heartbeat_retention_seconds") == settings.heartbeat_retention_days * 86400
    assert 3 * 3600 - 60 < (value(text, "nexmdm_heartbeats_oldest_age_seconds") or 0) < 3 * 3600 + 600


@pytest.mark.slow
def test_campaign_gauges_without_per_campaign_series(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """Campaigns by status, and the targets of those in flight added up by status: no campaign id anywhere."""
    seed_fleet(session_factory)
    seed_labels(session_factory)
    ids = seed_campaigns(session_factory, settings)
    campaigns = {"awaiting_approval": 0, "running": 1, "paused": 1, "halted": 0, "completed": 1, "cancelled": 0}
    targets = {
        status: sum(c["counts"][status] for c in EXPECTED_CAMPAIGNS) for status in EXPECTED_CAMPAIGNS[0]["counts"]
    }
    assert targets == {"queued": 2, "pending": 5, "acked": 1, "failed": 1, "expired": 0, "cancelled": 0}

    def matches(text: str) -> bool:
        return all(value(text, "nexmdm_fleet_campaigns", status=s) == n for s, n in campaigns.items()) and all(
            value(text, "nexmdm_fleet_campaign_targets", status=s) == n for s, n in targets.items()
        )

    with TestClient(create_app(settings)) as client:
        text = until(lambda: client.get("/metrics").text, matches)
    found = samples(text)
    assert len(found["nexmdm_fleet_campaigns"]) == len(campaigns)
    assert len(found["nexmdm_fleet_campaign_targets"]) == len(targets)
    assert not any(campaign_id in text for campaign_id in ids.values())


def test_refresh_at_most_every_period(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """The loop runs the fleet queries once per period however often it turns (a scrape never runs them)."""
    gauges = FleetGauges(settings, every=3600)
    opened: list[Session] = []

    def sessions() -> Session:
        opened.append(session_factory())
        return opened[-1]

    assert gauges.maybe_refresh(sessions) is True
    assert not any(gauges.maybe_refresh(sessions) for _ in range(5))
    assert len(opened) == 1


def test_readiness_gauge_counts_failing_time(settings: Settings) -> None:
    gauges = FleetGauges(settings)
    gauges.readiness(False)
    first = _gauge_value("nexmdm_readiness_failing_seconds")
    assert first > 0
    gauges.readiness(False)
    assert _gauge_value("nexmdm_readiness_failing_seconds") >= first
    gauges.readiness(True)
    assert _gauge_value("nexmdm_readiness_failing_seconds") == 0


def _gauge_value(name: str) -> float:
    from prometheus_client import REGISTRY

    result = REGISTRY.get_sample_value(name)
    assert result is not None
    return result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_one_value_per_series_across_workers(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """``nexmdm serve --workers 2``: each fleet series appears once, with the fleet's value, on every scrape."""
    seed_fleet(session_factory)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"NEXMDM_DATABASE_URL": settings.database_url, "NEXMDM_DATA_DIR": str(tmp_path)}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nexmdm_cli.main import run; run()",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ready(url, server, timeout=60)
        scrapes = [until(lambda: httpx.get(f"{url}/metrics").text, _fleet_matches, timeout=60)]
        scrapes += [httpx.get(f"{url}/metrics").text for _ in range(10)]
    finally:
        stop(server)
        log.close()
    for text in scrapes:
        found = samples(text)
        states = [labels["state"] for labels, _ in found["nexmdm_fleet_devices"]]
        assert sorted(states) == sorted(["online", "stale", "offline", "revoked"]), states
        assert all("pid" not in labels for labels, _ in found["nexmdm_fleet_devices"])
        assert len(found["nexmdm_fleet_pending_commands"]) == 1
        assert len(found["nexmdm_readiness_failing_seconds"]) == 1
        assert _fleet_matches(text)


def _live_metrics(settings: Settings) -> str:
    with TestClient(create_app(settings)) as client:
        client.get("/healthz")
        return until(
            lambda: client.get("/metrics").text,
            lambda text: value(text, "nexmdm_fleet_gauges_updated_timestamp_seconds") is not None,
        )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_metric_has_help_a_unit_and_a_line_in_the_docs(settings: Settings, engine: Engine) -> None:
    text = _live_metrics(settings)
    families = {
        name: help_text
        for name, help_text in helps(text).items()
        if name.startswith("nexmdm_") and not name.endswith("_created")  # prometheus_client's creation stamps
    }
    assert "nexmdm_fleet_devices" in families and "nexmdm_fcm_sends_total" in families
    docs = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(nexmdm_[a-z0-9_]+)`", docs, flags=re.MULTILINE))
    for name, help_text in families.items():
        assert help_text.strip(), f"{name} has no HELP text"
        assert name.endswith(UNITS) or name in LIBRARY_NAMES, f"{name} does not end with a unit {UNITS}"
        assert name in documented, f"{name} is served on /metrics but not listed in docs/metrics.md"
    assert documented - LAZY_NAMES <= set(families), (
        f"docs/metrics.md lists metrics that /metrics does not serve: {documented - LAZY_NAMES - set(families)}"
    )


def test_one_worker_per_period_runs_the_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers of one server share the metrics folder: the first to claim a period runs the queries."""
    from nexmdm_api.fleet_metrics import _NodeStamp

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first, second = _NodeStamp(), _NodeStamp()
    assert first.claim(every=60) is True
    assert second.claim(every=60) is False
    assert first.claim(every=60) is False
    assert second.claim(every=0) is True  # the period has passed
    assert not list(tmp_path.glob("*.db"))  # nothing the multiprocess collector would read as samples


def test_a_sample_file_read_half_written_is_read_again(
    settings: Settings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --workers N``: a worker creating its sample file as a scrape reads it (an empty file here, whose
    worker finishes it during the pause between two reads) costs a second read, not a 500 (client_python#604)."""
    from nexmdm_api import openapi

    directory = tmp_path / "prometheus"
    directory.mkdir()
    half_written = directory / "counter_4242.db"
    half_written.write_bytes(b"")  # a file whose header is not written yet
    pauses: list[str] = []

    async def worker_finishes() -> None:
        pauses.append("read again")
        half_written.unlink()

    monkeypatch.setattr(openapi, "_settle", worker_finishes)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    with TestClient(create_app(settings)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert pauses == ["read again"]  # the first read failed on the half-written file


def test_the_samples_of_a_dead_worker_are_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that died (killed, restarted by uvicorn) leaves its gauge samples in the shared directory; the
    next maintenance round removes them, so a dead exporter's figures are no longer served."""
    from prometheus_client import CollectorRegistry, multiprocess

    from nexmdm_api.metrics import forget_dead_workers

    directory = tmp_path / "prometheus"
    directory.mkdir()
    code = (
        "from prometheus_client import Gauge\n"
        "Gauge('nexmdm_push_queue_commands', 'h', multiprocess_mode='livemostrecent').set(41)\n"
    )
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    dead = subprocess.run([sys.executable, "-c", code], env=env, check=True)  # it has exited: a dead worker
    assert dead.returncode == 0

    def served() -> float | None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        return registry.get_sample_value("nexmdm_push_queue_commands")

    assert served() == 41  # prometheus_client alone keeps serving it
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    assert len(forget_dead_workers()) == 1
    assert served() is None
    assert forget_dead_workers() == []  # nothing left to forget
