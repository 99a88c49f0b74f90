"""``nexmdm audit`` and the CLI's share of the audit trail.

Every CLI command is either listed in ``CHANGES`` (it changes admin state: it must leave one audit row
with a ``cli:`` actor) or in ``NOT_AUDITED`` with the reason; a new command in neither fails the walk.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import typer.main
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from core import campaigns as fleet
from core.access import keys as admin_keys
from core.apk import builds as apk
from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.commands import dispatches
from core.enrollment import tokens as credentials
from core.events import webhooks
from core.models import AuditEvent
from core.storage.types import utcnow
from nexmdm_cli.main import app
from tests.support.approvals import ask_wipe
from tests.support.audit import seed_out_of_id_order
from tests.support.cli import Cli, one_error_line
from tests.support.databases import add_device
from tests.support.fakes.apk import apk_bytes
from tests.support.profiles import apply as apply_profile

Setup = Callable[[sessionmaker[Session], Path], list[str]]


def _device(factory: sessionmaker[Session], _tmp: Path) -> list[str]:
    add_device(factory, "dev_a")
    return []


def _command(factory: sessionmaker[Session], tmp: Path) -> list[str]:
    add_device(factory, "dev_a")
    with factory.begin() as db:
        dispatches.create_command(db, Settings(), request_id="cmd-a", device_id="dev_a", action="ping")
    return []


def _token(factory: sessionmaker[Session], _tmp: Path) -> list[str]:
    with factory.begin() as db:
        return [credentials.create_enrollment_token(db)[1]["id"]]


def _key(factory: sessionmaker[Session], _tmp: Path) -> list[str]:
    with factory.begin() as db:
        admin_keys.create_admin_key(db, name="victim")
    return []


def _apk(_factory: sessionmaker[Session], tmp: Path) -> list[str]:
    path = tmp / "a.apk"
    path.write_bytes(apk_bytes())
    return [str(path)]


def _build(factory: sessionmaker[Session], tmp: Path) -> list[str]:
    with factory.begin() as db:
        build = apk.add_build(
            db, Settings(apk_dir=tmp), source=io.BytesIO(apk_bytes()), version_code=9, version_name="9"
        )
    return [str(build["id"])]


def _campaign(factory: sessionmaker[Session], tmp: Path, *, paused: bool = False) -> list[str]:
    add_device(factory, "dev_a")
    with factory.begin() as db:
        _, campaign = fleet.create_campaign(
            db, Settings(), idempotency_key="seed-1", action="ping", device_ids=["dev_a"]
        )
        if paused:
            fleet.pause(db, campaign["id"])
    return [str(campaign["id"])]


def _webhook(factory: sessionmaker[Session], _tmp: Path) -> list[str]:
    with factory.begin() as db:
        return [webhooks.add_endpoint(db, url="https://hooks.example.com/x", events=["device.offline"])[1]["id"]]


def _delivery(factory: sessionmaker[Session], tmp: Path) -> list[str]:
    [endpoint_id] = _webhook(factory, tmp)
    with factory.begin() as db:
        webhooks.send_test(db, endpoint_id)
        return [str(webhooks.list_deliveries(db, endpoint_id=endpoint_id)[0]["id"])]


def _approval(factory: sessionmaker[Session], _tmp: Path) -> list[str]:
    add_device(factory, "dev_001")
    return [ask_wipe(factory, Settings())]  # asked by another admin (key:alice): the CLI may decide it


def _profile_file(_factory: sessionmaker[Session], tmp: Path) -> list[str]:
    path = tmp / "pos.yaml"
    path.write_text("name: pos\nsettings: {wifi: corp}\n")
    return ["-f", str(path)]


def _profile(factory: sessionmaker[Session], _tmp: Path) -> list[str]:
    for wifi in ("a", "b"):  # two versions: a rollback to the first changes something
        apply_profile(factory, Settings(), {"name": "pos", "settings": {"wifi": wifi}})
    return ["pos"]


#: command -> (expected action, setup returning extra arguments, arguments after them)
CHANGES: dict[str, tuple[str, Setup, list[str]]] = {
    "devices revoke": ("device.revoke", _device, ["dev_a", "--yes"]),
    "dispatches cancel": ("command.cancel", _command, ["cmd-a"]),
    "tokens create": ("token.create", lambda f, t: [], ["--uses", "2"]),
    "tokens revoke": ("token.revoke", _token, []),
    "keys create": ("key.create", lambda f, t: [], ["--name", "ci", "--role", "viewer"]),
    "keys revoke": ("key.revoke", _key, ["victim", "--yes"]),
    "apk add": ("apk.upload", _apk, ["--version-code", "3", "--version-name", "3"]),
    "webhooks add": ("webhook.create", lambda f, t: ["https://hooks.example.com/a"], ["--events", "device.online"]),
    "webhooks remove": ("webhook.remove", _webhook, ["--yes"]),
    "webhooks test": ("webhook.test", _webhook, []),
    "webhooks redeliver": ("webhook.redeliver", _delivery, []),
    "apk remove": ("apk.remove", _build, ["--yes"]),
    "devices label": ("device.label", _device, ["dev_a", "store=42"]),
    "send": ("command.create", _device, ["ping", "--device", "dev_a"]),
    "campaigns pause": ("campaign.pause", _campaign, []),
    "campaigns resume": ("campaign.resume", lambda f, t: _campaign(f, t, paused=True), []),
    "campaigns cancel": ("campaign.cancel", _campaign, ["--yes"]),
    "cleanup": ("retention.cleanup", lambda f, t: [], []),  # issue #21: deleting rows went unrecorded
    "db backup": ("db.backup", lambda f, t: [str(t / "nexmdm.backup")], []),
    # a read, but of personal data: every location read is audited
    "devices location": ("location.read", _device, ["dev_a"]),
    "console link": ("console.link", lambda f, t: [], ["--role", "viewer", "--email", "ann@example.com"]),
    "approvals approve": ("approval.approve", _approval, []),
    "approvals deny": ("approval.deny", _approval, []),
    "approvals cancel": ("approval.cancel", _approval, []),
    "profiles apply": ("profile.apply", _profile_file, ["--yes"]),
    "profiles rollback": ("profile.rollback", _profile, ["--to-version", "1", "--yes"]),
    "profiles delete": ("profile.delete", _profile, ["--yes"]),
}

#: commands that change no admin state (reads), or change it as maintenance that is not an admin's decision
NOT_AUDITED = {
    "profiles plan": "read (writes nothing)",
    "profiles list": "read",
    "profiles show": "read",
    "profiles history": "read",
    "devices effective": "read",
    "compliance": "read",
    "db upgrade": "schema maintenance (alembic_version records it)",
    "db downgrade": "schema maintenance",
    "db current": "read",
    "db history": "read",
    "apps list": "read",
    "apps show": "read",
    "db revision": "writes a file, not the database",
    "db check": "read",
    "db restore": "replaces the trail with the backup's, then adds db.restore (tests/cli/test_db_backup.py)",
    "schema check": "read",
    "heartbeats show": "read",
    "dispatches stats": "read",
    "dispatches show": "read",
    "dispatches list": "read",
    "devices list": "read",
    "devices show": "read",
    "tokens list": "read",
    "keys list": "read",
    "apk list": "read",
    "apk downloads": "read",
    "audit list": "read",
    "audit export": "read",
    "webhooks list": "read",
    "webhooks deliveries": "read",
    "devices labels": "read",
    "campaigns list": "read",
    "campaigns show": "read",
    "campaigns devices": "read",
    "campaigns watch": "read",
    "top": "read",
    "serve": "runs the API (whose admin changes are audited as key:NAME)",
    "worker": "delivery (automatic changes are system:worker)",
    "simulate": "load generator against an API; the token it creates is audited (test_simulate_audits_its_token)",
    "demo": "a throwaway embedded database",
    "actions list": "read (the catalogue: no database)",
    "actions show": "read (the catalogue: no database)",
    "approvals list": "read",
    "approvals show": "read",
    "campaigns failures": "read",
}


def leaves() -> set[str]:
    def walk(command: object, path: tuple[str, ...] = ()) -> list[str]:
        subs = getattr(command, "commands", None) or {}
        if not subs:
            return [" ".join(path)]
        return [leaf for name, sub in subs.items() for leaf in walk(sub, (*path, name))]

    return set(walk(typer.main.get_command(app)))


def test_every_command_is_classified() -> None:
    known = set(CHANGES) | set(NOT_AUDITED)
    assert leaves() - known == set(), "new CLI commands: add them to CHANGES or NOT_AUDITED"
    assert known - leaves() == set()


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_change_leaves_one_audit_row(name: str, cli: Cli, session_factory, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    action, setup, tail = CHANGES[name]
    args = [*name.split(), *setup(session_factory, tmp_path), *tail]
    with session_factory() as db:
        before = db.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    with session_factory() as db:
        new = list(db.execute(select(AuditEvent).where(AuditEvent.id > before)).scalars())
    assert [(row.action, row.outcome) for row in new] == [(action, "success")]
    assert new[0].actor.startswith("cli:") and "@" in new[0].actor
    assert new[0].details["sudo_user"] == "alice"
    secret_shaped = [w for w in result.stdout.split() if w.startswith(("nxe_", "nxa_"))]
    for secret in secret_shaped:
        assert secret not in repr(new[0].details)


def test_list_filters_and_json(cli: Cli, session_factory) -> None:
    assert cli("tokens", "create").exit_code == 0
    assert cli("keys", "create", "--name", "ci").exit_code == 0
    data = cli.json("audit", "list")
    assert [e["action"] for e in data["items"]] == ["key.create", "token.create"]
    assert cli.json("audit", "list", "--action", "token.*")["items"][0]["action"] == "token.create"
    assert cli.json("audit", "list", "--actor", "key:nobody")["items"] == []
    assert len(cli.json("audit", "list", "--since", "2020-01-01T00:00Z")["items"]) == 2
    table = cli("audit", "list")
    assert table.exit_code == 0 and "key.create" in table.stdout
    for bad in (["--since", "yesterday"], ["--since", "2020-01-01T00:00"], ["--outcome", "maybe"]):
        result = cli("audit", "list", *bad)
        assert result.exit_code == 2
        one_error_line(result)


def test_list_and_export_are_in_time_order_with_refusals_at_their_minute(cli: Cli, session_factory) -> None:
    expected = seed_out_of_id_order(session_factory)
    assert [e["target"] for e in cli.json("audit", "list")["items"]] == expected
    assert [e["target"] for e in cli.json("audit", "list", "--limit", "2")["items"]] == expected[:2]
    exported = cli("audit", "export", "--format", "jsonl")
    assert exported.exit_code == 0, exported.stderr
    assert [json.loads(line)["target"] for line in exported.stdout.splitlines()] == expected


def _seed(factory: sessionmaker[Session], n: int) -> None:
    now = utcnow()
    rows = [
        {
            "at": now - timedelta(seconds=i),
            "actor": "key:ci",
            "action": "device.label",
            "target": f"dev_{i}",
            "outcome": "success",
            "count": 1,
            "details": {"n": i},
        }
        for i in range(n)
    ]
    with factory.begin() as db:
        db.execute(insert(AuditEvent), rows)


def test_export_jsonl_and_csv(cli: Cli, session_factory) -> None:
    _seed(session_factory, 2500)
    result = cli("audit", "export", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2500 and json.loads(lines[0])["target"] == "dev_0"  # newest first (by time, not by id)
    assert len({json.loads(line)["id"] for line in lines}) == 2500
    result = cli("audit", "export", "--format", "csv", "--since", "1h")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2500 and json.loads(rows[-1]["details"]) == {"n": 2499}
    bad = cli("audit", "export", "--format", "xml")
    assert bad.exit_code == 2
    one_error_line(bad)


def test_csv_export_neutralises_formulas(cli: Cli, session_factory) -> None:
    """Issue #21: a cell a spreadsheet reads as a formula (= + - @ TAB CR first) gets a leading quote."""
    hostile = ['=HYPERLINK("https://evil.example/","x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]
    rows = [
        {
            "at": utcnow() - timedelta(seconds=i),
            "actor": value,
            "action": "device.label",
            "target": value,
            "client_address": value,
            "outcome": "success",
            "count": 1,
            "details": {"n": i},
        }
        for i, value in enumerate(hostile)
    ]
    with session_factory.begin() as db:
        db.execute(insert(AuditEvent), rows)
    result = cli("audit", "export", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    exported = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert [row["actor"] for row in exported] == ["'" + value for value in hostile]  # newest (`at`) first
    for row in exported:
        assert row["target"] == row["client_address"] == row["actor"]
        assert json.loads(row["details"])["n"] in range(len(hostile)) and row["count"] == "1"
    jsonl = [json.loads(line) for line in cli("audit", "export").stdout.splitlines()]
    assert [item["actor"] for item in jsonl] == hostile  # JSON lines carry the stored values as they are


@pytest.mark.slow
def test_export_memory_does_not_grow_with_the_trail(cli: Cli, session_factory) -> None:
    """Streamed in keyset pages: exporting 10x the rows must not take anywhere near 10x the memory."""

    def peak() -> int:
        sink = io.StringIO()
        tracemalloc.start()
        from core.events import audit

        with session_factory() as db:
            for row in audit.iter_events(db):
                sink.write(json.dumps(row, default=str))
                sink.seek(0)
                sink.truncate()
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high

    _seed(session_factory, 2000)
    small = peak()
    with session_factory.begin() as db:
        db.execute(AuditEvent.__table__.delete())
    _seed(session_factory, 20000)
    large = peak()
    assert large < small * 2, (small, large)


def test_the_help_lists_the_events_core_knows() -> None:
    from core.events import webhooks as core_webhooks
    from nexmdm_cli.main import app as root

    result = CliRunner().invoke(root, ["webhooks", "add", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert [event for event in core_webhooks.EVENT_TYPES if event not in result.output] == []


def test_cleanup_records_its_periods_and_counts_and_keeps_a_day_of_audit(cli: Cli, session_factory) -> None:
    """Issue #21: `cleanup --audit-days 0` deleted the whole trail and recorded nothing."""
    _seed(session_factory, 3)
    refused = cli("cleanup", "--audit-days", "0")
    assert refused.exit_code == 2 and "--audit-days" in refused.stderr
    with session_factory() as db:
        assert len(db.execute(select(AuditEvent)).all()) == 3
    assert cli("cleanup", "--dry-run").exit_code == 0  # counting changes nothing: no row
    result = cli("cleanup", "--audit-days", "1", "--heartbeats-days", "2")
    assert result.exit_code == 0, result.stderr
    with session_factory() as db:
        rows = list(db.execute(select(AuditEvent).where(AuditEvent.action == "retention.cleanup")).scalars())
    assert len(rows) == 1 and rows[0].actor.startswith("cli:")
    assert rows[0].details["days"]["audit_events"] == 1 and rows[0].details["days"]["device_heartbeats"] == 2
    assert rows[0].details["deleted"] == {entity: 0 for entity in rows[0].details["days"]}
    with pytest.raises(InvalidArgument, match="at least 1"):
        Settings(audit_retention_days=0)


def test_simulate_audits_its_token(cli: Cli, session_factory) -> None:
    """Issue #21: the enrollment token `nexmdm simulate` creates had no audit row."""
    with socket.socket() as closed:  # a free port nobody listens on: the devices cannot enroll
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = cli("simulate", "--devices", "1", "--duration", "1", "--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    with session_factory() as db:
        rows = list(db.execute(select(AuditEvent)).scalars())
    assert [(row.action, row.actor.startswith("cli:")) for row in rows] == [("token.create", True)]
