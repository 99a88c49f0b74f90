"""``nexmdm profiles apply --wave-percent ...`` (a profile rollout) and how ``nexmdm campaigns`` shows it, on
both databases; bad wave options are one line and exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.models import Campaign, ProfileVersion
from tests.support.cli import Cli, count, one_error_line
from tests.support.fleet import seed_many

POS = "name: pos\nselector: store=1\nsettings:\n  wifi: {{ssid: {ssid}}}\n"


def test_apply_in_waves_shows_in_campaigns(cli: Cli, tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as db:
        seed_many(db, 10, labels={"store": "1"})
    document = tmp_path / "pos.yaml"
    document.write_text(POS.format(ssid="a"))
    assert cli.json("profiles", "apply", "-f", str(document), "--yes")["rollout"] is None
    document.write_text(POS.format(ssid="b"))
    applied = cli.json(
        "profiles", "apply", "-f", str(document), "--wave-percent", "50%", "--wave-interval", "15m",
        "--max-noncompliant", "5%", "--grace", "10m", "--yes",
    )  # fmt: skip
    rollout = applied["rollout"]
    assert applied["version"] == 2 and rollout["kind"] == "profile"
    assert rollout["waves"] | {"next_at": None} == {
        "size": 5, "percent": 50.0, "count": 2, "released": 0, "interval_seconds": 900,
        "min_success_pct": None, "max_failure_pct": 5.0, "next_at": None,
    }  # fmt: skip
    assert rollout["profile"]["grace_seconds"] == 600
    listed = cli.json("campaigns", "list")["items"]
    assert [(c["id"], c["kind"]) for c in listed] == [(rollout["id"], "profile")]
    table = cli("campaigns", "list")
    assert table.exit_code == 0 and "profile pos v1 → v2" in table.stdout and "0/10 compliant" in table.stdout
    shown = cli("campaigns", "show", rollout["id"])
    assert "max noncompliant" in shown.stdout and "queued (held)" in shown.stdout
    assert cli.json("campaigns", "pause", rollout["id"])["status"] == "paused"
    text = cli("profiles", "apply", "-f", str(document), "--wave-size", "3", "--yes")
    assert "unchanged" in text.stdout  # the same document: nothing written, no rollout
    assert count(session_factory, Campaign) == 1


def test_bad_wave_options_are_one_line(cli: Cli, tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    document = tmp_path / "pos.yaml"
    document.write_text(POS.format(ssid="a"))
    for args, text in (
        (["--wave-percent", "0"], "above 0 %"),
        (["--wave-percent", "lots"], "percentage such as 5%"),
        (["--wave-interval", "10m"], "need --wave-percent or --wave-size"),
        (["--max-noncompliant", "5%"], "need --wave-percent or --wave-size"),
        (["--wave-size", "2", "--max-noncompliant", "120%"], "between 0% and 100%"),
        (["--wave-size", "2", "--wave-interval", "soon"], "--wave-interval"),
        (["--wave-size", "2", "--grace", "0s"], "--grace must be a positive number"),
        (["--wave-size", "2", "--grace", "31d"], "grace_seconds must be 1 s to 30 days"),
        (["--wave-size", "2", "--wave-percent", "10%"], "exactly one of wave_percent or wave_size"),
    ):
        result = cli("profiles", "apply", "-f", str(document), *args, "--yes")
        assert result.exit_code == 2, (args, result.stderr)
        assert text in one_error_line(result), (args, result.stderr)
    assert count(session_factory, ProfileVersion) == 0
