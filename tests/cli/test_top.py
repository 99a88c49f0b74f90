"""``nexmdm top --json`` and ``--once``: the figures of a seeded fleet, on both databases."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.models import COMMAND_STATUSES
from tests.support.cli import Cli, one_error_line
from tests.support.cli_fleet import (
    EXPECTED,
    EXPECTED_CAMPAIGNS,
    EXPECTED_STORE_1,
    seed_campaigns,
    seed_fleet,
    seed_labels,
)


def test_json_figures(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    data = cli.json("top")
    assert data["devices"] == EXPECTED["devices"]
    assert data["heartbeats"]["stored"] == EXPECTED["heartbeats_last_minute"]
    assert data["heartbeats"]["per_second"] == pytest.approx(EXPECTED["heartbeats_last_minute"] / 60)
    assert "dedup" not in data["heartbeats"]  # leaves no row: only with --metrics-url
    # every status the model knows is listed (0 when none); a status added later shows up by itself
    assert data["commands"]["last_hour"] == dict.fromkeys(COMMAND_STATUSES, 0) | EXPECTED["commands_last_hour"]
    assert data["commands"]["pending"] == EXPECTED["pending_now"]
    assert data["push_queue"]["depth"] == EXPECTED["push_queue_depth"]
    assert 590 <= data["push_queue"]["oldest_age_seconds"] <= 660
    push, ack = data["latency"]["push_latency_ms"], data["latency"]["ack_latency_ms"]
    assert {k: round(push[k]) for k in ("p50", "p99")} == EXPECTED["push_ms"]
    assert {k: round(ack[k]) for k in ("p50", "p99")} == EXPECTED["ack_ms"]
    went = data["went_offline"]
    assert went["count"] == 2
    assert [item["device_id"] for item in went["items"]] == EXPECTED["went_offline"]
    assert data["selector"] is None
    assert data["campaigns"] == {"in_flight": 0, "items": [], "more": 0}


def test_once_table(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    result = cli("top", "--once")
    assert result.exit_code == 0, result.stderr
    screen = result.stdout
    for label, value in (("online", 3), ("stale", 2), ("offline", 4), ("revoked", 1), ("total", 10)):
        assert re.search(rf"\b{label}\s+{value}\b", screen), label
    assert re.search(r"pending now\s+2\b", screen)
    assert re.search(r"push queue\s+1\b", screen)
    assert re.search(r"push p50\s+300 ms", screen) and re.search(r"ack p99\s+6\.00 s", screen)
    assert "Went offline in the last hour: 2" in screen
    assert screen.index("dev_off_10m") < screen.index("dev_off_40m")
    assert "dev_off_3h" not in screen and "dev_revoked" not in screen


def test_empty_fleet(cli: Cli) -> None:
    data = cli.json("top")
    assert data["devices"]["total"] == 0
    assert data["latency"]["push_latency_ms"] == {"p50": None, "p99": None, "count": 0}
    assert cli("top", "--once").exit_code == 0


class _Metrics(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[str]:
    """A real HTTP server on loopback answering like a NexMDM /metrics."""
    _Metrics.body = (
        b"# HELP nexmdm_heartbeats_total Heartbeats handled, by result\n"
        b"# TYPE nexmdm_heartbeats_total counter\n"
        b'nexmdm_heartbeats_total{result="created"} 75.0\n'
        b'nexmdm_heartbeats_total{result="deduplicated"} 25.0\n'
        b'nexmdm_heartbeats_total{result="rate_limited"} 3.0\n'
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_dedup_share_from_metrics(cli: Cli, metrics_server: str) -> None:
    data = cli.json("top", "--metrics-url", metrics_server)
    assert data["heartbeats"]["dedup"]["share"] == pytest.approx(0.25)
    assert data["heartbeats"]["dedup"]["window"] == "since start"
    # two servers: their counters add up
    data = cli.json("top", "--metrics-url", metrics_server, "--metrics-url", metrics_server)
    assert data["heartbeats"]["dedup"]["share"] == pytest.approx(0.25)
    plain = cli("top", "--once", "--metrics-url", metrics_server).stdout
    assert re.search(r"dedup share\s+25\.0%", plain) and "all devices" not in plain
    # a selector narrows the stored beats, not the servers' counters: the row under the share says so
    narrowed = cli("top", "--once", "--selector", "store=1", "--metrics-url", metrics_server).stdout
    assert re.search(r"dedup share\s+25\.0%[^\n]*\n[^\n]*│ all devices\s", narrowed), narrowed


def test_unreachable_metrics_is_a_warning(cli: Cli) -> None:
    result = cli("top", "--once", "--metrics-url", "http://127.0.0.1:9/metrics")
    assert result.exit_code == 0
    assert "warning: metrics:" in result.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_bad_options(cli: Cli) -> None:
    assert cli("top", "--interval", "0.1").exit_code == 2
    result = cli("top", "--json", url="postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code != 0
    one_error_line(result)


def test_without_a_terminal_it_prints_once(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    result = cli("top")  # stdout is not a terminal here: no live screen, no alternate screen
    assert result.exit_code == 0, result.stderr
    assert "\x1b[?1049h" not in result.stdout
    assert re.search(r"\bonline\s+3\b", result.stdout)


def test_dedup_share_over_the_last_minute_between_refreshes(metrics_server: str) -> None:
    """The live view scrapes every refresh: the share is over the counters' increase, not since start."""
    from nexmdm_cli.commands.top import MetricsSource

    source = MetricsSource([metrics_server])
    first = source.dedup()
    assert first is not None and first["window"] == "since start" and first["share"] == pytest.approx(0.25)
    _Metrics.body = (
        b"# TYPE nexmdm_heartbeats_total counter\n"
        b'nexmdm_heartbeats_total{result="created"} 175.0\n'
        b'nexmdm_heartbeats_total{result="deduplicated"} 125.0\n'
    )
    second = source.dedup()
    assert second is not None and second["window"] == "1m"
    assert second["share"] == pytest.approx(100 / 200)
    # a restarted server (counters went down): back to its totals since start
    _Metrics.body = b'# TYPE nexmdm_heartbeats_total counter\nnexmdm_heartbeats_total{result="created"} 10.0\n'
    third = source.dedup()
    assert third is not None and third["window"] == "since start" and third["share"] == 0
    _Metrics.body = b'# TYPE nexmdm_heartbeats_total counter\nnexmdm_heartbeats_total{result="created"} 30.0\n'
    fourth = source.dedup()
    assert fourth is not None and fourth["window"] == "1m" and fourth["share"] == 0  # 20 more, none deduplicated


def test_selector_narrows_the_device_figures(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    seed_labels(session_factory)
    data = cli.json("top", "--selector", "store=1")
    assert data["selector"] == "store=1"
    assert data["devices"] == EXPECTED_STORE_1["devices"]
    assert data["heartbeats"]["stored"] == EXPECTED_STORE_1["heartbeats_last_minute"]
    assert data["went_offline"]["count"] == len(EXPECTED_STORE_1["went_offline"])
    assert [item["device_id"] for item in data["went_offline"]["items"]] == EXPECTED_STORE_1["went_offline"]
    # commands and the push queue stay fleet-wide
    assert data["commands"]["pending"] == EXPECTED["pending_now"]
    assert data["push_queue"]["depth"] == EXPECTED["push_queue_depth"]
    # terms combine; @state and negation work as in `devices list --selector`
    both = cli.json("top", "-l", "store=1,@state=offline")
    assert both["devices"] == {"online": 0, "stale": 0, "offline": 2, "revoked": 1, "total": 3}
    negated = cli.json("top", "--selector", "store!=1")
    assert negated["devices"] == {"online": 2, "stale": 1, "offline": 2, "revoked": 0, "total": 5}
    assert cli.json("top", "--selector", "all")["devices"] == EXPECTED["devices"]
    nobody = cli.json("top", "--selector", "store=9")
    assert nobody["devices"]["total"] == 0 and nobody["went_offline"]["items"] == []

    screen = cli("top", "--once", "--selector", "store=1").stdout
    assert re.search(r"NexMDM top · selector store=1 ·", screen)
    for label, value in (("online", 1), ("stale", 1), ("offline", 2), ("revoked", 1), ("total", 5)):
        assert re.search(rf"\b{label}\s+{value}\b", screen), label
    assert "Commands · all devices" in screen
    assert "Went offline in the last hour: 1" in screen and "dev_off_40m" not in screen


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_bad_selector_is_one_line_and_exit_2(cli: Cli) -> None:
    listed = cli("devices", "list", "--selector", "store in")
    for args in (("--json",), ("--once",), ()):
        result = cli("top", "--selector", "store in", *args)
        assert result.exit_code == 2 == listed.exit_code
        assert one_error_line(result) == one_error_line(listed)  # the same message as every --selector
        assert "invalid selector at position" in result.stderr
    assert cli("top", "--selector", "@state=asleep").exit_code == 2


def test_campaigns_in_flight(cli: Cli, session_factory: sessionmaker[Session], settings: Settings) -> None:
    seed_fleet(session_factory)
    seed_labels(session_factory)
    ids = seed_campaigns(session_factory, settings)
    data = cli.json("top")
    flight = data["campaigns"]
    assert flight["in_flight"] == 2 and flight["more"] == 0
    assert [c["id"] for c in flight["items"]] == [ids["running"], ids["paused"]]  # newest first; no completed
    for item, expected in zip(flight["items"], EXPECTED_CAMPAIGNS, strict=True):
        assert item["action"] == expected["action"] and item["status"] == expected["status"]
        assert item["targeted"] == expected["targeted"]
        assert (item["waves"]["released"], item["waves"]["count"]) == expected["waves"]
        assert {k: item["counts"][k] for k in expected["counts"]} == expected["counts"]
        # the very figures `nexmdm campaigns show` gives
        assert item["counts"] == cli.json("campaigns", "show", item["id"])["counts"]
    assert set(flight["items"][0]) == {
        "id", "status", "reason", "action", "selector", "note", "targeted", "waves", "counts", "created_at"
    }  # fmt: skip
    # campaigns are fleet-wide: a selector does not narrow them
    assert cli.json("top", "--selector", "store=9")["campaigns"] == flight

    screen = cli("top", "--once").stdout
    assert "Campaigns in flight: 2" in screen
    running = next(line for line in screen.splitlines() if ids["running"] in line)
    cells = [cell.strip() for cell in running.split("│")[1:-1]]
    # campaign, action, status, wave, progress bar, done, acked failed expired cancelled pending queued
    assert cells[1:4] == ["lock", "running", "1/2"]
    assert cells[5] == "2/4 50%" and cells[6:] == ["1", "1", "0", "0", "0", "2"]
    assert ids["done"] not in screen


def test_at_most_a_handful_of_campaigns(cli: Cli, session_factory: sessionmaker[Session], settings: Settings) -> None:
    from core.ops import fleet_stats

    seed_fleet(session_factory)
    seed_labels(session_factory)
    ids = seed_campaigns(session_factory, settings)
    with session_factory() as db:
        shown = fleet_stats.campaigns_in_flight(db, limit=1)
    assert shown["in_flight"] == 2 and shown["more"] == 1 and [c["id"] for c in shown["items"]] == [ids["running"]]
    from nexmdm_cli import top_campaigns

    snap = {"campaigns": shown}
    wide = top_campaigns.campaigns(snap, 140)
    assert wide is not None and wide.caption == "+1 more: nexmdm campaigns list"  # type: ignore[attr-defined]
    assert top_campaigns.rows(snap, 140) == top_campaigns.TABLE_FRAME + 1 + 1
    assert top_campaigns.rows(snap, 80) == top_campaigns.PANEL_FRAME + 2
    assert top_campaigns.campaigns({"campaigns": {"in_flight": 0, "items": [], "more": 0}}, 140) is None


def test_compliance_line(cli: Cli, session_factory: sessionmaker[Session], settings: Settings) -> None:
    """The devices by compliance, from the gauge's function, narrowed by a selector and by a scope."""
    from datetime import timedelta

    from core.models import Device, DeviceCompliance
    from core.ops import fleet_stats
    from core.profiles import grace
    from core.storage.types import utcnow
    from tests.support.profiles import apply, profile, required

    seed_fleet(session_factory)
    seed_labels(session_factory)
    # no profile yet: nothing is asked of the unrevoked devices
    assert cli.json("top")["compliance"] == {"compliant": 9, "noncompliant": 0, "pending": 0, "unknown": 0}
    apply(session_factory, settings, profile("pos", "store=1", apps=[required("com.acme.pos", 4200)]))
    with session_factory.begin() as db:  # store=1 (4 unrevoked): one of each state
        hashes = {d.id: d.effective_hash for d in db.query(Device).filter(Device.id.like("dev_%"))}
        for device_id, state, reasons in (
            ("dev_on_a", "noncompliant", ",APP_NOT_UPDATED,"),
            ("dev_stale_a", "compliant", ","),
        ):
            db.add(
                DeviceCompliance(
                    device_id=device_id, reported_hash=hashes[device_id], state=state, reasons=reasons, items=[]
                )
            )
            grace.store_judged(db, device_id, hashes[device_id], state, reasons)  # as a report stores it
        db.get_one(Device, "dev_off_3h").effective_since = utcnow() - timedelta(
            hours=2
        )  # past the grace, never reported
        db.flush()
        grace.expire(db, settings)  # the maintenance sweep ends its grace: unknown
    fleet = {"compliant": 6, "noncompliant": 1, "pending": 1, "unknown": 1}  # store=2 has no profile: compliant
    data = cli.json("top")
    assert data["compliance"] == fleet == cli.json("compliance")["states"]
    store_1 = {"compliant": 1, "noncompliant": 1, "pending": 1, "unknown": 1}
    assert cli.json("top", "--selector", "store=1")["compliance"] == store_1
    assert cli.json("top", "--selector", "store=9")["compliance"] == dict.fromkeys(fleet, 0)
    with session_factory() as db:  # a principal's scope narrows it like the other device figures
        assert fleet_stats.snapshot(db, settings, scope="store=1")["compliance"] == store_1

    screen = cli("top", "--once").stdout
    assert "Compliance compliant 6 (67%), noncompliant 1 (11%), pending 1 (11%), unknown 1 (11%)" in screen
    narrowed = cli("top", "--once", "--selector", "store=1").stdout
    assert "Compliance compliant 1 (25%), noncompliant 1 (25%), pending 1 (25%), unknown 1 (25%)" in narrowed
