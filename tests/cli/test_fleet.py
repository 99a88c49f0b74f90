"""``nexmdm send``, ``campaigns ...``, ``devices label/labels/list --selector``, ``tokens create --label``."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from core.commands import dispatches
from core.models import Campaign, EnrollmentToken, FcmDispatch
from tests.support.cli import Cli, count, one_error_line
from tests.support.fleet import SCANNING, ack_all, seed_fleet, seed_many, seed_pixels


def test_send_to_one_device_is_a_plain_command(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    result = cli("send", "ping", "--device", "a1", "--idempotency-key", "ops-1", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["request_id"] == "ops-1"
    assert "idempotency key: ops-1" in result.stderr
    again = cli.json("send", "ping", "--device", "a1", "--idempotency-key", "ops-1")
    assert again["created"] is False
    assert count(session_factory, FcmDispatch) == 1 and count(session_factory, Campaign) == 0


def test_send_dry_run_confirm_and_campaign(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    dry = cli.json("send", "sync", "--to", "store=42", "--dry-run")
    assert dry == {"dry_run": True, "plain": False, "matched": 2, "sample": ["a1", "a2"]}
    refused = cli("send", "sync", "--to", "store=42", input="n\n")
    assert refused.exit_code == 1 and count(session_factory, Campaign) == 0
    made = cli.json("send", "sync", "--to", "store=42", "--wave-size", "1", "--wave-interval", "10m", "--yes")
    assert made["targeted"] == 2 and made["waves"]["released"] == 1 and made["counts"]["pending"] == 1
    key = made["idempotency_key"]
    replay = cli.json(
        "send",
        "sync",
        "--to",
        "store=42",
        "--wave-size",
        "1",
        "--wave-interval",
        "10m",
        "--yes",
        "--idempotency-key",
        key,
    )
    assert replay["id"] == made["id"] and replay["created"] is False
    assert count(session_factory, Campaign) == 1


def test_campaigns_devices_shows_the_model_and_the_ack_detail_of_failed_targets(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    seed_fleet(session_factory)
    made = cli.json("send", "sync", "--to", "store=42", "--yes")
    cid = made["id"]
    with session_factory.begin() as db:
        dispatches.ack_command(db, device_id="a2", request_id=f"{cid}:a2", status="failed", detail="DOWNLOAD_FAILED")
    page = cli.json("campaigns", "devices", cid, "--status", "failed")
    assert [(t["device_id"], t["model"], t["detail"]) for t in page["items"]] == [("a2", "Pixel 8", "DOWNLOAD_FAILED")]
    assert page["next_cursor"] is None
    first = cli.json("campaigns", "devices", cid, "--limit", "1")
    assert [t["device_id"] for t in first["items"]] == ["a1"] and first["next_cursor"] == "a1"
    rest = cli.json("campaigns", "devices", cid, "--after", "a1")
    assert [(t["device_id"], t["status"], t["model"]) for t in rest["items"]] == [("a2", "failed", "Pixel 8")]
    people = cli("campaigns", "devices", cid, "--status", "failed")
    assert people.exit_code == 0, people.stderr
    assert "Pixel 8" in people.stdout and "DOWNLOAD_FAILED" in people.stdout


def test_send_refuses_bad_input_in_one_line(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    for args, text in (
        (["send", "sync", "--to", "store in 42"], "position 9"),
        (["send", "sync", "--to", "store=1", "--all"], "exactly one of"),
        (["send", "sync", "--all", "--wave-percent", "0", "--yes"], "above 0 %"),
        (["send", "sync", "--all", "--wave-interval", "10m", "--yes"], "need --wave-size or --wave-percent"),
        (["send", "sync", "--all", "--max-failure", "120%", "--yes"], "between 0% and 100%"),
        (["send", "sync", "--to", "store=nowhere", "--yes"], "no device matches"),
        (["send", "sync", "--all", "--payload", "[1]", "--yes"], "JSON object"),
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert text in one_error_line(result), (args, result.stderr)
    assert count(session_factory, Campaign) == 0


def test_campaigns_list_show_pause_resume_watch(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_factory.begin() as db:
        seed_many(db, 6)
    made = cli.json(
        "send", "ring", "--payload", '{"seconds": 5}', "--all", "--wave-size", "3", "--wave-interval", "1h", "--yes"
    )
    cid = made["id"]
    assert [c["id"] for c in cli.json("campaigns", "list")["items"]] == [cid]
    assert cli.json("campaigns", "show", cid)["counts"]["queued"] == 3
    assert cli("campaigns", "show", cid).exit_code == 0
    assert cli.json("campaigns", "pause", cid)["status"] == "paused"
    assert cli.json("campaigns", "resume", cid)["status"] == "running"
    missing = cli("campaigns", "show", "cmp_00000000000000000000000000")
    assert missing.exit_code == 3 and "no campaign" in one_error_line(missing)
    # finish it: the devices ack, the interval is shortened so the second wave goes now, they ack again
    ack_all(session_factory, cid)
    with session_factory.begin() as db:
        db.execute(Campaign.__table__.update().values(interval_seconds=0))
    fleet.run_due(session_factory, settings)
    ack_all(session_factory, cid)
    fleet.run_due(session_factory, settings)
    watched = cli("campaigns", "watch", cid, "--json")
    assert watched.exit_code == 0, watched.stderr
    final = json.loads(watched.stdout)
    assert final["status"] == "completed" and final["counts"]["acked"] == 6
    people = cli("campaigns", "watch", cid)
    assert "acked" in people.stdout and f"campaign {cid} completed: 6/6 acked" in people.stdout


def test_labels_from_the_cli(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    assert cli.json("devices", "label", "a2", "ring=canary", "store-") == {
        "device_id": "a2",
        "labels": {"ring": "canary"},
    }
    assert cli.json("devices", "show", "a2")["labels"] == {"ring": "canary"}
    assert "ring=canary" in cli("devices", "show", "a2").stdout
    bad = cli("devices", "label", "a2", "Ring=x")
    assert bad.exit_code == 2 and "label key" in one_error_line(bad)
    bulk = cli.json("devices", "label", "--selector", "ring=canary", "wave=1", "--yes")
    assert bulk == {"selector": "ring=canary", "matched": 2}
    listed = cli.json("devices", "list", "--selector", "wave=1")
    assert [d["device_id"] for d in listed["items"]] == ["a1", "a2"]
    assert listed["items"][0]["labels"]["wave"] == "1"
    table = cli("devices", "list", "--selector", "wave=1")
    assert "wave=1" in table.stdout
    bad_selector = cli("devices", "list", "--selector", "wave in")
    assert bad_selector.exit_code == 2 and "invalid selector at position" in one_error_line(bad_selector)
    counts = {(c["key"], c["value"]): c["devices"] for c in cli.json("devices", "labels")["items"]}
    assert counts[("wave", "1")] == 2
    assert "wave" in cli("devices", "labels").stdout


def test_tokens_create_with_labels(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    made = cli.json("tokens", "create", "--label", "store=42", "--label", "ring=beta")
    assert made["labels"] == {"store": "42", "ring": "beta"}
    with session_factory() as db:
        assert db.execute(select(EnrollmentToken.labels)).scalar_one() == {"store": "42", "ring": "beta"}
    bad = cli("tokens", "create", "--label", "store")
    assert bad.exit_code == 2 and "key=value" in one_error_line(bad)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_reads_by_selector_past_the_time_limit_exit_2_writes_go_on(cli: Cli, engine: Engine) -> None:
    """PostgreSQL cancels the scan (``@model`` has no index) at 1 ms: every read by selector is one line
    and exit 2; a campaign to the same selector is a write and is not limited."""
    pixels = seed_pixels(engine)
    assert [d["device_id"] for d in cli.json("devices", "list", "--selector", SCANNING)["items"]] == pixels
    tight = Cli(cli.url, cli.env | {"NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS": "1"})
    for args in (
        ("devices", "list", "--selector", SCANNING),
        ("devices", "list", "--selector", SCANNING, "--json"),
        ("top", "--json", "--selector", SCANNING),
        ("top", "--once", "--selector", SCANNING),
        ("send", "ping", "--to", SCANNING, "--dry-run"),
    ):
        result = tight(*args)
        assert result.exit_code == 2, (args, result.stderr)
        line = one_error_line(result)
        assert "ran past its 1 ms time limit (NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS)" in line, line
        assert "narrow it with a label, @state or an @agent_version comparison" in line
    sent = tight("send", "ping", "--to", SCANNING, "--yes", "--json")
    assert sent.exit_code == 0, sent.stderr
    assert json.loads(sent.stdout)["targeted"] == 2
