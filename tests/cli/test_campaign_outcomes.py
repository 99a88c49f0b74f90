"""``nexmdm send --until``, ``campaigns show/list`` with outcomes, and ``campaigns failures``."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from core.campaigns import outcomes
from core.models import Campaign, FcmDispatch
from core.storage.types import utcnow
from tests.support.cli import Cli, count, one_error_line
from tests.support.fleet import ack_all, seed_fleet

#: in tests.support.fleet.FLEET, a1, a2 and a5 run 2.0 or later; a3 and a4 do not
UNTIL = "@agent_version>=2.0"


def _send_until(outcome_timeout: str) -> tuple[str, ...]:
    """``nexmdm send update_agent`` to the whole fleet until ``UNTIL`` holds, within ``outcome_timeout``."""
    return (
        "send",
        "update_agent",
        "--payload",
        '{"build_id": 1}',
        "--all",
        "--until",
        UNTIL,
        "--outcome-timeout",
        outcome_timeout,
        "--yes",
    )


@pytest.fixture(autouse=True)
def sweep_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round sweeps (a server sweeps at most every ``SWEEP_EVERY_SECONDS``; one test keeps that)."""
    monkeypatch.setattr(outcomes, "SWEEP_EVERY_SECONDS", 0)


def test_send_until_skips_the_satisfied_and_failures_group_them(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    seed_fleet(session_factory)
    bad = cli("send", "update_agent", "--payload", '{"build_id": 1}', "--all", "--until", "@agent_version>>2", "--yes")
    assert bad.exit_code != 0 and "success_when" in one_error_line(bad)
    timeout = cli(*_send_until("5s"))
    assert timeout.exit_code != 0 and "outcome_timeout" in one_error_line(timeout)
    assert count(session_factory, Campaign) == 0
    made = cli.json(*_send_until("10m"))
    assert made["success_when"] == UNTIL and made["outcome_timeout_seconds"] == 600
    assert (
        made["counts"]["skipped"] == 3 and made["counts"]["pending"] == 2 and count(session_factory, FcmDispatch) == 2
    )
    human = cli(*_send_until("10m"), "--idempotency-key", made["idempotency_key"])
    assert "3 skipped (already satisfied)" in human.stdout + human.stderr
    ack_all(session_factory, made["id"], status="failed")
    with session_factory.begin() as db:
        db.execute(update(FcmDispatch).values(ack_detail="INSUFFICIENT_STORAGE", finished_at=utcnow()))
    fleet.run_due(session_factory, settings)

    shown = cli("campaigns", "show", made["id"])
    assert shown.exit_code == 0 and "success when" in shown.stdout and "skipped" in shown.stdout
    listed = cli("campaigns", "list")
    assert "0/2 succeeded · 3 skipped" in listed.stdout
    groups = cli.json("campaigns", "failures", made["id"])
    assert [(g["reason"], g["model"], g["count"], g["sample_device_ids"]) for g in groups["groups"]] == [
        ("INSUFFICIENT_STORAGE", "unknown", 2, ["a3", "a4"])
    ]
    text = cli("campaigns", "failures", made["id"])
    assert "2 × INSUFFICIENT_STORAGE on unknown / unknown" in text.stdout
    drill = cli.json("campaigns", "failures", made["id"], "--reason", "INSUFFICIENT_STORAGE")
    assert [d["device_id"] for d in drill["items"]] == ["a3", "a4"] and drill["items"][0]["detail"]
    refused = cli("campaigns", "failures", made["id"], "--reason", "not a reason")
    assert refused.exit_code != 0 and "reason" in one_error_line(refused)


def test_simulator_failure_rules() -> None:
    from core.base.errors import InvalidArgument
    from nexmdm_cli import simulation_faults as faults

    rule = faults.parse_rule("model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE")
    assert rule == faults.FailRule("model", "Galaxy A10", "install_apk", "INSUFFICIENT_STORAGE")
    a10, pixel = {"model": "Galaxy A10", "os_version": "11"}, {"model": "Pixel 8", "os_version": "14"}
    assert faults.failure((rule,), a10, "install_apk") == "INSUFFICIENT_STORAGE"
    assert faults.failure((rule,), a10, "ring") is None and faults.failure((rule,), pixel, "install_apk") is None
    for bad in ("Galaxy A10:install_apk:X", "serial=1:install_apk:X", "model=A:install apk:X", "model=A:ring:lower"):
        try:
            faults.parse_rule(bad)
        except InvalidArgument as exc:
            assert exc.field == "--fail"
        else:
            raise AssertionError(f"{bad!r} was accepted")
    builds = dict([faults.parse_build("1=com.acme.pos:4200")])
    assert faults.installed({"action": "install_apk", "payload": {"build_id": 1}}, builds) == ("com.acme.pos", 4200)
    assert faults.installed({"action": "install_apk", "payload": {"build_id": 2}}, builds) is None
    assert faults.installed({"action": "ring", "payload": {"seconds": 1}}, builds) is None
    for bad in ("com.acme.pos:4200", "x=com.acme.pos:4200", "1=com.acme.pos", "1=:4200"):
        try:
            faults.parse_build(bad)
        except InvalidArgument as exc:
            assert exc.field == "--build"
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_watch_an_outcome_gated_campaign(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    made = cli.json("send", "update_agent", "--payload", '{"build_id": 1}', "--all", "--until", UNTIL, "--yes")
    watched = cli("campaigns", "watch", made["id"], "--every", "0.2", "--timeout", "0.1")
    assert watched.exit_code == 0, watched.stderr
    assert "succeeded" in watched.stdout and "skipped" in watched.stdout and "successes/s" in watched.stdout
    assert "0/2 succeeded · 3 skipped" in watched.stdout
