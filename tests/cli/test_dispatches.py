"""``nexmdm dispatches``: stats (with the idempotency hit rate), show and list."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from core import db_utils
from core.storage.types import utcnow
from tests.support.cli import Cli, one_error_line, seed_dispatch
from tests.support.databases import add_device


def _seed(factory: sessionmaker[Session]) -> None:
    add_device(factory, "dev_001")
    add_device(factory, "dev_002")
    now = utcnow()
    seed_dispatch(
        factory,
        "r1",
        action="ping",
        ago=timedelta(minutes=10),
        fcm_status="sent",
        sent_at=now - timedelta(minutes=10) + timedelta(milliseconds=200),
    )
    seed_dispatch(
        factory,
        "r2",
        action="ping",
        ago=timedelta(minutes=5),
        status="acked",
        fcm_status="sent",
        sent_at=now - timedelta(minutes=5) + timedelta(milliseconds=400),
        acked_at=now - timedelta(minutes=4),
        finished_at=now - timedelta(minutes=4),
    )
    seed_dispatch(factory, "r3", "dev_002", action="reboot", ago=timedelta(minutes=1), fcm_status="skipped")
    seed_dispatch(factory, "r-old", action="lock", ago=timedelta(days=3))


def _replay(factory: sessionmaker[Session], request_id: str, device_id: str = "dev_001", times: int = 1) -> None:
    for _ in range(times):
        with factory.begin() as db:
            db_utils.record_fcm_dispatch(
                db, request_id=request_id, device_id=device_id, action="ping", payload_hash="0" * 64
            )


def test_stats_json(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    data = cli.json("dispatches", "stats")
    assert data["total"] == 3
    assert data["by_status"] == {"pending": 2, "acked": 1}
    assert data["by_action"] == {"ping": 2, "reboot": 1}
    assert data["by_fcm_status"] == {"sent": 2, "skipped": 1}
    assert data["replays"] == 0 and data["idempotency_hit_rate"] == 0.0
    assert data["idempotency_hit_rate_high"] is False
    assert data["push_latency_ms"]["count"] == 2
    assert 150 <= data["push_latency_ms"]["p50"] <= 450
    assert data["ack_latency_ms"]["count"] == 1
    assert cli.json("dispatches", "stats", "--since", "7d")["total"] == 4


def test_stats_table_flags_a_high_hit_rate(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    quiet = cli("dispatches", "stats")
    assert quiet.exit_code == 0
    assert "0.0%" in quiet.stdout and "above 5%" not in quiet.stdout
    assert "reboot" in quiet.stdout and "skipped" in quiet.stdout and "p50" in quiet.stdout

    _replay(session_factory, "r1")  # 1 replay out of 4 requests: 25 %
    data = cli.json("dispatches", "stats")
    assert data["replays"] == 1 and data["idempotency_hit_rate"] == 0.25
    assert data["idempotency_hit_rate_high"] is True
    loud = cli("dispatches", "stats")
    assert "25.0% (above 5%" in loud.stdout


def test_stats_on_an_empty_database(cli: Cli) -> None:
    result = cli("dispatches", "stats")
    assert result.exit_code == 0
    assert "commands" in result.stdout and "By status" not in result.stdout


def test_show(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    data = cli.json("dispatches", "show", "r2")
    assert data["request_id"] == "r2" and data["status"] == "acked"
    assert [step["status"] for step in data["history"]] == ["pending", "sent", "acked"]
    table = cli("dispatches", "show", "r2")
    assert table.exit_code == 0
    assert "acked" in table.stdout and "History" in table.stdout and "dev_001" in table.stdout


def test_show_unknown_exits_3(cli: Cli) -> None:
    result = cli("dispatches", "show", "nope")
    assert result.exit_code == 3
    assert "nope" in one_error_line(result)


def test_list_filters(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    assert [d["request_id"] for d in cli.json("dispatches", "list")["items"]] == ["r-old", "r3", "r2", "r1"]
    by_device = cli.json("dispatches", "list", "--device", "dev_002")["items"]
    assert [d["request_id"] for d in by_device] == ["r3"]
    acked = cli.json("dispatches", "list", "--status", "acked")["items"]
    assert [d["request_id"] for d in acked] == ["r2"]
    assert len(cli.json("dispatches", "list", "--limit", "2")["items"]) == 2
    assert len(cli.json("dispatches", "list", "--since", "1h")["items"]) == 3
    table = cli("dispatches", "list", "--status", "pending")
    assert "r1" in table.stdout and "r3" in table.stdout and "r2" not in table.stdout
    assert cli("dispatches", "list", "--device", "dev_none").stdout.strip() == "No commands match."


def test_list_bad_status_exits_2(cli: Cli) -> None:
    result = cli("dispatches", "list", "--status", "lost")
    assert result.exit_code == 2
    assert "--status" in one_error_line(result)
