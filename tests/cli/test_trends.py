"""Trend lines: the battery and network line of ``heartbeats show``, the 24-hour presence strip of
``devices show``; ``--json`` stays as it was."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from tests.support.cli import Cli, seed_heartbeat
from tests.support.databases import add_device


def _line(stdout: str, label: str) -> str:
    return next(line for line in stdout.splitlines() if line.lstrip("│ ").startswith(label))


def test_heartbeats_show_draws_battery_and_network(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_t")
    # half-hour slots over 24 h: 3h10m ago is slot 41, 10 minutes ago slot 47 (the last)
    seed_heartbeat(session_factory, "dev_t", timedelta(hours=3, minutes=10), battery_pct=10, network_type="wifi")
    seed_heartbeat(session_factory, "dev_t", timedelta(minutes=10), battery_pct=90, network_type="cellular")
    result = cli("heartbeats", "show", "dev_t", "--since", "24h")
    assert result.exit_code == 0, result.stderr
    battery = _line(result.stdout, "battery")
    assert battery.rstrip().endswith("▁     █"), battery
    assert battery.count("▁") == 1 and battery.count("█") == 1
    network = _line(result.stdout, "network")
    assert network.rstrip().endswith("w     c"), network
    assert "10% → 90%, min 10%, max 90%" in result.stdout
    assert "c cellular · w wifi" in result.stdout


def test_heartbeats_show_json_is_unchanged(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_t")
    seed_heartbeat(session_factory, "dev_t", timedelta(minutes=10), battery_pct=90, network_type="wifi")
    data = cli.json("heartbeats", "show", "dev_t")
    assert set(data) == {"device_id", "since", "last_seen_at", "items"}
    assert set(data["items"][0]) == {
        "device_id",
        "bucket_start",
        "received_at",
        "status",
        "battery_pct",
        "plugged",
        "network_type",
        "agent_version",
    }


def test_devices_show_presence_strip(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_t")
    for ago in (timedelta(hours=23, minutes=10), timedelta(hours=5, minutes=10), timedelta(minutes=10)):
        seed_heartbeat(session_factory, "dev_t", ago, battery_pct=50)
    seed_heartbeat(session_factory, "dev_t", timedelta(minutes=11), battery_pct=50)  # same slot as the last
    result = cli("devices", "show", "dev_t")
    assert result.exit_code == 0, result.stderr
    row = _line(result.stdout, "heard from (24h)")
    strip = row.split("│")[2].strip()
    assert len(strip) == 48
    assert [i for i, char in enumerate(strip) if char == "█"] == [1, 37, 47], strip
    assert "3 of 48 half-hours with a heartbeat" in result.stdout
    data = cli.json("devices", "show", "dev_t")
    assert "heard from" not in str(data) and data["heartbeats_stored"] == 4


def test_device_never_heard_from(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_t")
    result = cli("devices", "show", "dev_t")
    assert result.exit_code == 0
    assert "·" * 48 in result.stdout and "0 of 48 half-hours" in result.stdout
