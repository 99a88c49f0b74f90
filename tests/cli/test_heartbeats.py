"""``nexmdm heartbeats show``: newest first, relative times, a friendly line when there are none."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from tests.support.cli import Cli, one_error_line, seed_heartbeat
from tests.support.databases import add_device


def _seed(factory: sessionmaker[Session]) -> None:
    add_device(factory, "dev_001")
    seed_heartbeat(factory, "dev_001", timedelta(days=3), battery_pct=80, network_type="cellular")
    seed_heartbeat(factory, "dev_001", timedelta(minutes=30), battery_pct=55, plugged=False, network_type="wifi")
    seed_heartbeat(
        factory,
        "dev_001",
        timedelta(seconds=12),
        battery_pct=7,
        plugged=True,
        network_type="ethernet",
        agent_version="2.4.1",
        status="ok",
    )


def test_json_is_newest_first_within_the_window(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    data = cli.json("heartbeats", "show", "dev_001")
    assert data["device_id"] == "dev_001"
    assert [b["battery_pct"] for b in data["items"]] == [7, 55]  # the 3-day-old one is outside 24h
    assert data["items"][0]["plugged"] is True and data["items"][0]["agent_version"] == "2.4.1"

    wider = cli.json("heartbeats", "show", "dev_001", "--since", "7d")
    assert [b["battery_pct"] for b in wider["items"]] == [7, 55, 80]
    limited = cli.json("heartbeats", "show", "dev_001", "--since", "7d", "--limit", "1")
    assert [b["battery_pct"] for b in limited["items"]] == [7]


def test_table_shows_relative_times_and_values(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    result = cli("heartbeats", "show", "dev_001")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    newest = next(line for line in lines if "ethernet" in line)
    assert "s ago" in newest and "7%" in newest and "yes" in newest and "2.4.1" in newest and "ok" in newest
    older = next(line for line in lines if "wifi" in line)
    assert "30m ago" in older and "55%" in older and "no" in older
    assert lines.index(newest) < lines.index(older)
    assert "cellular" not in result.stdout


def test_friendly_line_when_there_are_none(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_quiet")
    result = cli("heartbeats", "show", "dev_quiet")
    assert result.exit_code == 0
    assert result.stdout.strip() == "No heartbeats from dev_quiet in the last 24h (it has never sent one)."

    seed_heartbeat(session_factory, "dev_quiet", timedelta(days=3))
    result = cli("heartbeats", "show", "dev_quiet", "--since", "1h")
    assert "last seen 3d ago" in result.stdout
    assert cli.json("heartbeats", "show", "dev_quiet", "--since", "1h")["items"] == []


def test_unknown_device_exits_3(cli: Cli) -> None:
    result = cli("heartbeats", "show", "dev_nobody", "--json")
    assert result.exit_code == 3
    assert "dev_nobody" in one_error_line(result)


def test_malformed_duration_exits_2(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_001")
    result = cli("heartbeats", "show", "dev_001", "--since", "3x")
    assert result.exit_code == 2
    assert "--since" in one_error_line(result)
