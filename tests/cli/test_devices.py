"""``nexmdm devices``: the fleet view, one device, revoke with confirmation."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.enrollment.enroll import revoke_device
from core.models import Device
from tests.support.cli import Cli, one_error_line, seed_dispatch, seed_heartbeat
from tests.support.databases import add_device


def _fleet(factory: sessionmaker[Session]) -> None:
    for device_id in ("dev_online", "dev_stale", "dev_offline", "dev_never", "dev_revoked"):
        add_device(factory, device_id)
    seed_heartbeat(
        factory, "dev_online", timedelta(seconds=20), battery_pct=64, network_type="wifi", agent_version="2.4.1"
    )
    seed_heartbeat(factory, "dev_stale", timedelta(minutes=20), battery_pct=10, network_type="cellular")
    seed_heartbeat(factory, "dev_offline", timedelta(days=2), battery_pct=3)
    seed_heartbeat(factory, "dev_revoked", timedelta(seconds=5))


def _revoke(factory: sessionmaker[Session], device_id: str) -> None:
    with factory.begin() as db:
        revoke_device(db, device_id)


def test_list_states(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _fleet(session_factory)
    _revoke(session_factory, "dev_revoked")
    items = cli.json("devices", "list")["items"]
    assert {d["device_id"]: d["state"] for d in items} == {
        "dev_never": "offline",
        "dev_offline": "offline",
        "dev_online": "online",
        "dev_revoked": "revoked",
        "dev_stale": "stale",
    }
    table = cli("devices", "list")
    assert table.exit_code == 0
    online = next(line for line in table.stdout.splitlines() if "dev_online" in line)
    assert "online" in online and "s ago" in online and "64%" in online and "wifi" in online and "2.4.1" in online
    never = next(line for line in table.stdout.splitlines() if "dev_never" in line)
    assert "never" in never
    assert "1 online" in table.stdout and "2 offline" in table.stdout


def test_list_offline_and_limit(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _fleet(session_factory)
    offline = cli.json("devices", "list", "--offline")["items"]
    assert [d["device_id"] for d in offline] == ["dev_never", "dev_offline"]
    assert len(cli.json("devices", "list", "--limit", "2")["items"]) == 2
    assert cli("devices", "list", "--limit", "0").exit_code == 2


def test_empty_fleet(cli: Cli) -> None:
    result = cli("devices", "list")
    assert result.exit_code == 0 and "No devices yet" in result.stdout
    assert cli.json("devices", "list") == {"items": []}


def test_show(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _fleet(session_factory)
    seed_dispatch(session_factory, "cmd-1", "dev_online")
    data = cli.json("devices", "show", "dev_online")
    assert data["state"] == "online" and data["battery_pct"] == 64 and data["network_type"] == "wifi"
    assert data["heartbeats_stored"] == 1 and data["pending_commands"] == 1
    table = cli("devices", "show", "dev_online")
    assert table.exit_code == 0
    assert "64%" in table.stdout and "pending commands" in table.stdout and "2.4.1" in table.stdout


def test_show_unknown_exits_3(cli: Cli) -> None:
    result = cli("devices", "show", "dev_ghost")
    assert result.exit_code == 3
    assert "dev_ghost" in one_error_line(result)


def test_revoke_asks_and_yes_skips(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_lost", device_token_hash="a" * 64)

    refused = cli("devices", "revoke", "dev_lost", input="n\n")
    assert refused.exit_code == 1
    with session_factory() as db:
        assert db.get(Device, "dev_lost").revoked_at is None

    done = cli("devices", "revoke", "dev_lost", "--yes", "--json")
    assert done.exit_code == 0, done.stderr
    assert cli.json("devices", "show", "dev_lost")["state"] == "revoked"
    with session_factory() as db:
        device = db.get(Device, "dev_lost")
        assert device.revoked_at is not None and device.device_token_hash is None


def test_revoke_unknown_fails_before_asking(cli: Cli) -> None:
    result = cli("devices", "revoke", "dev_ghost")
    assert result.exit_code == 3
    assert "dev_ghost" in one_error_line(result)
