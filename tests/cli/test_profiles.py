"""``nexmdm profiles`` (plan, apply, list, show, history, rollback, delete), ``devices effective`` and
``nexmdm compliance`` on both databases."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.devices import labels
from tests.support.cli import Cli, one_error_line
from tests.support.fleet import seed_fleet

BASE = """\
name: base
priority: 0
apps:
  - {package: com.acme.pos, install: required, min_version_code: 4000}
settings:
  wifi: {ssid: corp}
"""
STORE = """\
name: store42
selector: store=42
priority: 10
apps:
  - {package: com.acme.pos, install: required, min_version_code: 4200}
"""


def test_plan_apply_show_history_rollback_delete(
    cli: Cli, tmp_path: Path, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    seed_fleet(session_factory)
    base, store = tmp_path / "base.yaml", tmp_path / "store42.yaml"
    base.write_text(BASE)
    store.write_text(STORE)
    planned = cli.json("profiles", "plan", "-f", str(base))
    assert planned["new"] and planned["devices_changing"] == 5  # every unrevoked device of the fleet
    assert cli.json("profiles", "list")["items"] == []  # plan wrote nothing
    shown_plan = cli("profiles", "plan", "-f", str(base))
    assert "settings/wifi" in shown_plan.stdout and "5 devices" in shown_plan.stdout
    assert cli.json("profiles", "apply", "-f", str(base), "--yes")["version"] == 1
    assert cli.json("profiles", "apply", "-f", str(store), "--yes")["devices_changing"] == 2
    unchanged = cli("profiles", "apply", "-f", str(store), "--yes")
    assert unchanged.exit_code == 0 and "unchanged" in unchanged.stdout
    assert [p["name"] for p in cli.json("profiles", "list")["items"]] == ["base", "store42"]

    effective = cli.json("devices", "effective", "a1")
    keys = {k["key"]: k for k in effective["keys"]}
    assert keys["apps/com.acme.pos"]["profile"] == "store42"
    assert keys["apps/com.acme.pos"]["overrides"][0]["profile"] == "base"
    assert keys["settings/wifi"]["profile"] == "base"
    table = cli("devices", "effective", "a1")
    assert "store42 v1" in table.stdout and "base v1" in table.stdout

    store.write_text(STORE.replace("4200", "4300"))
    assert cli.json("profiles", "apply", "-f", str(store), "--yes")["version"] == 2
    assert cli.json("profiles", "rollback", "store42", "--to-version", "1", "--yes")["version"] == 3
    assert [v["version"] for v in cli.json("profiles", "history", "store42")["items"]] == [3, 2, 1]
    assert cli.json("profiles", "show", "store42", "--version", "2")["document"]["apps"][0]["min_version_code"] == 4300
    assert cli.json("profiles", "delete", "store42", "--yes")["deleted"] is True
    assert cli.json("devices", "effective", "a1")["keys"][0]["profile"] == "base"

    states = cli.json("compliance", "--by", "profile")
    assert states["total"] == 5 and states["states"]["pending"] == 5  # a new hash, no report yet
    assert states["groups"] == [
        {"key": "base", "states": {"compliant": 0, "noncompliant": 0, "pending": 5, "unknown": 0}}
    ]
    assert "5 devices" in cli("compliance").stdout
    assert cli.json("devices", "show", "a1")["compliance"]["state"] == "pending"
    assert "pending, profile" in cli("devices", "show", "a1").stdout
    with session_factory.begin() as db:  # a label move shows at the next look, without a fleet-wide pass
        labels.label_device(db, "a5", {"store": "42"}, [])
    assert cli.json("devices", "effective", "a5")["effective_hash"] is not None


def test_bad_files_are_one_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\napps:\n  - {package: com.a.b, install: maybe}\n")
    refused = cli("profiles", "apply", "-f", str(bad), "--yes")
    assert refused.exit_code != 0 and "apps[0].install" in one_error_line(refused)
    bad.write_text("name: x\ncolour: red\n")
    assert "colour" in one_error_line(cli("profiles", "plan", "-f", str(bad)))
    assert "no profile 'nope'" in one_error_line(cli("profiles", "show", "nope"))
    assert "cannot read" in one_error_line(cli("profiles", "plan", "-f", str(tmp_path / "missing.yaml")))
