"""The simulator is the reference agent for profiles: it applies its effective profile, reports its inventory
and each item, and a ``--fail`` rule on ``install_apk`` shows up as noncompliance the server agrees with."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.models import ApkBuild, Device, DeviceCompliance, FcmDispatch
from nexmdm_cli import sim_profiles
from nexmdm_cli.commands.simulate import render_convergence
from nexmdm_cli.sim_convergence import Convergence
from nexmdm_cli.sim_inventory import SimInventory
from nexmdm_cli.simulation import Simulation
from nexmdm_cli.simulation_faults import parse_rule
from nexmdm_cli.state import out_console
from tests.support.api import live_server
from tests.support.profiles import apply, blocked, profile, required

POS = profile(
    "pos",
    apps=[required("com.acme.pos", 4200), blocked("com.evil.game")],
    settings={"wifi": {"ssid": "store"}},
    os={"min_api_level": 31},
)


def test_apply_installs_removes_and_reports_each_item() -> None:
    inventory = SimInventory.for_device("sim-p-1")
    inventory.install("com.evil.game", 1)
    items = {i["key"]: i for i in sim_profiles.apply(inventory, POS)}
    assert inventory.apps["com.acme.pos"]["version_code"] == 4200 and "com.evil.game" not in inventory.apps
    assert items["apps/com.acme.pos"]["state"] == items["apps/com.evil.game"]["state"] == "compliant"
    assert items["settings/wifi"]["state"] == "compliant"
    expected = "compliant" if inventory.device["api_level"] >= 31 else "noncompliant"
    assert items["os"]["state"] == expected
    failing = SimInventory.for_device("sim-p-2")
    rule = parse_rule(f"model={failing.device['model']}:install_apk:INSUFFICIENT_STORAGE")
    item = sim_profiles.apply(failing, POS, (rule,))[0]
    assert item == {
        "key": "apps/com.acme.pos",
        "state": "noncompliant",
        "reason": "APP_NOT_INSTALLED",
        "detail": "INSUFFICIENT_STORAGE",
    }
    assert "com.acme.pos" not in failing.apps


def test_simulated_fleet_converges(settings: Settings, session_factory: sessionmaker[Session], make_token: Any) -> None:
    token = make_token(uses=10)
    rule = parse_rule("model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE")

    async def change_the_profile(_sim: Simulation) -> None:  # after enrollment: every device moves at once
        await asyncio.to_thread(apply, session_factory, settings, profile("pos", apps=[required("com.acme.pos", 4200)]))

    with live_server(settings) as port:
        sim = Simulation(
            f"http://127.0.0.1:{port}", token, devices=6, duration=3, interval=0.3, prefix="simp", fail_rules=(rule,)
        )
        asyncio.run(sim.run(during=change_the_profile))
    with session_factory() as db:
        judged = {row.device_id: row for row in db.scalars(select(DeviceCompliance))}
    assert len(judged) == 6, "every device reported on its profile"
    models = [sim.inventories[d].device["model"] for d in judged]
    assert "Galaxy A10" in models and len(set(models)) > 1  # (seeded by the device ids: both outcomes occur)
    for device_id, row in judged.items():
        failing = sim.inventories[device_id].device["model"] == "Galaxy A10"
        assert row.state == ("noncompliant" if failing else "compliant"), (device_id, row.items)


def test_a_required_app_with_a_build_waits_for_its_install() -> None:
    inventory = SimInventory.for_device("sim-p-3")
    [item] = sim_profiles.apply(inventory, profile("pos", apps=[required("com.acme.pos", 4200) | {"build": 7}]))
    assert item == {
        "key": "apps/com.acme.pos",
        "state": "noncompliant",
        "reason": "APP_NOT_INSTALLED",
        "detail": "waiting for build 7",
    }
    assert "com.acme.pos" not in inventory.apps


def test_a_simulated_fleet_converges_through_remediation(
    settings: Settings, session_factory: sessionmaker[Session], make_token: Any
) -> None:
    token = make_token(uses=6)
    rule = parse_rule("model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE")
    with session_factory.begin() as db:
        build = ApkBuild(version_code=4200, version_name="42.0", filename="pos.apk", size_bytes=1, sha256="0" * 64)
        db.add(build)
        db.flush()
        build_id = build.id
    document = profile("pos", apps=[required("com.acme.pos", 4200) | {"build": build_id}])

    async def change_the_profile(_sim: Simulation) -> None:
        await asyncio.to_thread(apply, session_factory, settings, document)

    with live_server(settings) as port:
        sim = Simulation(
            f"http://127.0.0.1:{port}",
            token,
            devices=6,
            # install, inventory, report and judgement take a few beats each: 4 s was not always enough on a
            # loaded machine (a device's last report not yet judged compliant when the run ended)
            duration=10,
            interval=0.3,
            prefix="simr",
            fail_rules=(rule,),
            builds={build_id: ("com.acme.pos", 4200)},
        )
        asyncio.run(sim.run(during=change_the_profile))
    with session_factory() as db:
        judged = {row.device_id: row.state for row in db.scalars(select(DeviceCompliance))}
        commands = {row.device_id: row for row in db.scalars(select(FcmDispatch))}
    assert len(judged) == len(commands) == 6  # one remediation each, however often they reported
    models = {sim.inventories[d].device["model"] for d in judged}
    assert "Galaxy A10" in models and len(models) > 1  # (seeded by the device ids: both outcomes occur)
    for device_id, state in judged.items():
        failing = sim.inventories[device_id].device["model"] == "Galaxy A10"
        command = commands[device_id]
        assert command.request_id.startswith(f"remediate:{device_id}:{build_id}:")
        assert (state, command.status) == (("noncompliant", "failed") if failing else ("compliant", "acked"))
        assert sim.inventories[device_id].apps.get("com.acme.pos", {}).get("version_code") == (
            None if failing else 4200
        )


def test_the_simulator_reports_how_fast_a_profile_change_converged(
    settings: Settings, session_factory: sessionmaker[Session], make_token: Any
) -> None:
    token = make_token(uses=6)
    rule = parse_rule("model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE")
    applied: list[float] = []

    async def change_the_profile(_sim: Simulation) -> None:  # once every device has beaten a few times
        await asyncio.sleep(1.0)
        applied.append(time.monotonic())
        await asyncio.to_thread(apply, session_factory, settings, profile("pos", apps=[required("com.acme.pos", 4200)]))

    with live_server(settings) as port:
        sim = Simulation(
            f"http://127.0.0.1:{port}", token, devices=6, duration=4, interval=0.3, prefix="simc", fail_rules=(rule,)
        )
        started = time.monotonic()
        report = asyncio.run(sim.run(during=change_the_profile))
    with session_factory() as db:
        states = {row.device_id: row.state for row in db.scalars(select(DeviceCompliance))}
        hashes = set(db.scalars(select(Device.effective_hash).where(Device.id.like("simc-%"))))
    [row] = report["profile_convergence"]  # no profile before the change: the change is the only hash told
    assert hashes == {row["effective_hash"]}
    assert row["devices_told"] == row["devices_reported"] == 6 and row["converged_pct"] == 100.0
    assert row["noncompliant"] == sum(s == "noncompliant" for s in states.values()) > 0
    assert row["compliant"] == sum(s == "compliant" for s in states.values()) > 0
    assert applied[0] - started <= row["first_told_s"] + 0.05  # told after the change, not before
    assert 0 <= row["told_p99_s"] <= row["p99_s"]  # a device reports after it is told
    assert 0 <= row["p50_s"] <= row["p90_s"] <= row["p99_s"] <= report["elapsed_s"] - row["first_told_s"]
    assert row["p99_s"] < 3 * 0.3 * 1.2 + 1.0  # a beat or two of 0.3 s, then one fetch and report each


def test_convergence_merges_parts_and_leaves_unreached_percentiles_empty() -> None:
    one, two = Convergence(), Convergence()
    for i in range(100):
        (one if i % 2 else two).tell("h1", f"d{i}", 10.0 + i / 10)
    for i in range(98):  # two devices never report: 98 % converged, no 99th percentile
        (one if i % 2 else two).judged("h1", f"d{i}", "compliant" if i % 3 else "noncompliant", 12.0 + i / 10)
    one.judged("h1", "d1", "pending", 11.0)  # pending: not settled
    one.merge(two)
    [row] = one.report(started=5.0)
    assert row["first_told_s"] == 5.0 and row["devices_told"] == 100 and row["devices_reported"] == 98
    assert row["converged_pct"] == 98.0 and row["p99_s"] is None
    assert (row["p50_s"], row["p90_s"], row["told_p99_s"]) == (6.9, 10.9, 9.8)
    assert row["noncompliant"] == 33 and row["compliant"] == 65


def test_the_summary_prints_a_row_per_effective_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # (the console reads it at each print)
    seen = Convergence()
    for i in range(4):
        seen.tell("ab" * 32, f"d{i}", 1.0 + i)
    for i in range(3):
        seen.judged("ab" * 32, f"d{i}", "compliant", 2.0 + i)
    with out_console.capture() as captured:
        render_convergence(seen.report(started=0.5))
    [line] = [x for x in captured.get().splitlines() if "abababababab" in x]
    cells = [cell.strip() for cell in line.split("│")[2:-1]]
    assert cells == ["0.5 s", "4", "3", "3", "0", "75.0 %", "2.0", "-", "-", "3.0"]  # p50: the 2nd of 4 told
