"""``nexmdm demo``: the whole system end to end on a throwaway embedded database, in under a minute."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from core.base.settings import get_settings
from nexmdm_cli.commands.simulate import fake_fcm_env, render_report, run_with_progress
from nexmdm_cli.state import info, out_console

if TYPE_CHECKING:
    from nexmdm_cli.simulation import Simulation


#: (action, payload) sent by the demo, each valid for its action's payload schema (docs/actions.md)
DEMO_COMMANDS: tuple[tuple[str, dict[str, object] | None], ...] = (
    ("ring", {"seconds": 5}),
    ("sync", None),
    ("lock", {"message": "nexmdm demo"}),
    ("ping", None),
    ("locate", None),
)
_RUN_CLI = "from nexmdm_cli.main import run; run()"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the API exited with code {server.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API was not ready within {timeout:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


CAMPAIGN_DEVICES = 24
#: the demo's rollout: com.acme.pos 4200 until every device reports it; Galaxy A10s run out of storage
ROLLOUT_PAYLOAD = '{"build_id": 1}'
#: what build 1 installs (the simulated agents' stand-in for reading the APK's manifest)
ROLLOUT_BUILDS = {1: ("com.acme.pos", 4200)}
ROLLOUT_UNTIL = "@app(com.acme.pos)>=4200"
ROLLOUT_FAILURE = "model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE"


#: the demo's profile, rolled out in two waves after the halted campaign: the devices it did not reach update
#: themselves; the Galaxy A10s still cannot install, fail the rollout's compliance (within its 50 % gate) and
#: show as noncompliant APP_NOT_UPDATED
DEMO_PROFILE = """\
name: demo-shops
selector: demo=campaign
apps:
  - {package: com.acme.pos, install: required, min_version_code: 4200}
settings:
  wifi: {ssid: shop, security: WPA2}
"""
#: the devices the profile's compliance line names (shown by model: the Galaxy A10s)
NONCOMPLIANT = "@noncompliant(APP_NOT_UPDATED)"
#: seconds the demo waits for the devices to report on the profile (they heartbeat every second)
PROFILE_WAIT = 10.0
#: the profile rollout: two waves, a short grace (the simulated devices report within a second or two)
PROFILE_ROLLOUT = ("--wave-percent", "50%", "--max-noncompliant", "50%", "--grace", "3s")
#: seconds the demo watches the profile rollout (two waves, each decided within the grace and a sweep)
ROLLOUT_WATCH = "20"


def demo_apps(index: int) -> dict[str, int]:
    """Every eighth demo device already runs com.acme.pos 4200 (the rollout skips it); the others 4100."""
    return {"com.acme.pos": 4200 if index % 8 == 0 else 4100, "com.android.chrome": 12000}


def campaign_phase(root: Any, settings: Any, database_url: str, folder: Path, env: dict[str, str]) -> None:
    """Devices enrolled with a labelled token report their apps and poll every second while an outcome-gated
    rollout reaches them in waves, halts on a model that cannot install, and shows the failure groups."""
    import asyncio  # here: `nexmdm --help` and the other commands do not need it

    from core import campaigns as fleet
    from core.enrollment import tokens as credentials
    from core.storage import engine as core_db
    from nexmdm_cli import simulation, simulation_faults

    engine = core_db.engine_from_settings(settings)
    with core_db.make_session_factory(engine, settings).begin() as db:
        token, _ = credentials.create_enrollment_token(
            db, uses=CAMPAIGN_DEVICES, note="nexmdm demo campaign", labels={"demo": "campaign"}
        )
    engine.dispose()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "server-campaign.log").open("wb")
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-c", _RUN_CLI, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    sim = simulation.Simulation(
        url,
        token,
        devices=CAMPAIGN_DEVICES,
        duration=60,
        interval=1.0,
        poll_every=1,
        prefix="shop",
        fail_rules=(simulation_faults.parse_rule(ROLLOUT_FAILURE),),
        preinstalled=demo_apps,
        builds=ROLLOUT_BUILDS,
    )
    devices = threading.Thread(target=lambda: asyncio.run(sim.run()), name="demo-devices", daemon=True)
    try:
        wait_until_ready(url, server)
        devices.start()
        deadline = time.monotonic() + 15
        while len(sim.tokens) < CAMPAIGN_DEVICES and time.monotonic() < deadline:
            time.sleep(0.2)
        # the devices report their apps at their first heartbeat: the rollout then skips those already there
        while any(inv.reported is None for inv in list(sim.inventories.values())) and time.monotonic() < deadline:
            time.sleep(0.2)

        def run(*args: str) -> None:
            with contextlib.suppress(SystemExit):
                root.main(["--database-url", database_url, *args], prog_name="nexmdm", standalone_mode=False)

        for args in (
            ["devices", "labels"],
            ["send", "install_apk", "--payload", ROLLOUT_PAYLOAD, "--to", "demo=campaign", "--dry-run"],
            [
                "send",
                "install_apk",
                "--payload",
                ROLLOUT_PAYLOAD,
                "--to",
                "demo=campaign",
                "--until",
                ROLLOUT_UNTIL,
                "--wave-percent",
                "25",
                "--wave-interval",
                "3s",
                "--max-failure",
                "10%",
                "--yes",
                "--idempotency-key",
                "demo-campaign-1",
                "--note",
                "nexmdm demo: com.acme.pos 4200",
            ],
        ):
            out_console.rule(f"nexmdm {' '.join(args)}")
            run(*args)
        engine = core_db.engine_from_settings(settings)
        with core_db.make_session_factory(engine, settings)() as db:
            newest = fleet.list_campaigns(db, limit=1)
        engine.dispose()
        campaign_id = newest[0]["id"] if newest else None
        if campaign_id:
            out_console.rule(f"nexmdm campaigns watch {campaign_id}")
            run("campaigns", "watch", campaign_id, "--every", "0.5", "--timeout", "8")
            out_console.rule(f"nexmdm campaigns show {campaign_id}")
            run("campaigns", "show", campaign_id)
            out_console.rule(f"nexmdm campaigns failures {campaign_id}")
            run("campaigns", "failures", campaign_id)
        profile_phase(run, settings, folder)
    finally:
        stop(server)  # the simulated devices (a daemon thread) find it gone and end with the demo
        log.close()


def profile_phase(run: Callable[..., None], settings: Any, folder: Path) -> None:
    """Roll ``DEMO_PROFILE`` out to the campaign's devices in two waves and watch the rollout, wait until
    they have all reported on it (none pending or unknown), and show the fleet's compliance by reason, and
    the noncompliant devices by model."""
    from core import campaigns as fleet
    from core.profiles import compliance
    from core.storage import engine as core_db

    document = folder / "demo-shops.yaml"
    document.write_text(DEMO_PROFILE)
    out_console.rule(f"nexmdm profiles apply -f {document.name} {' '.join(PROFILE_ROLLOUT)}")
    run("profiles", "apply", "-f", str(document), *PROFILE_ROLLOUT, "--yes")
    engine = core_db.engine_from_settings(settings)
    factory = core_db.make_session_factory(engine, settings)
    with factory() as db:
        newest = fleet.list_campaigns(db, limit=1)
    if newest and newest[0]["kind"] == "profile":
        out_console.rule(f"nexmdm campaigns watch {newest[0]['id']}")
        run("campaigns", "watch", newest[0]["id"], "--every", "0.5", "--timeout", ROLLOUT_WATCH)
    deadline = time.monotonic() + PROFILE_WAIT
    try:
        while time.monotonic() < deadline:
            with factory() as db:
                states = compliance.summary(db, settings, selector="demo=campaign")["states"]
            if states["pending"] == states["unknown"] == 0:
                break
            time.sleep(0.3)
    finally:
        engine.dispose()
    for args in (["compliance", "--by", "reason"], ["compliance", "--selector", NONCOMPLIANT, "--by", "model"]):
        out_console.rule(f"nexmdm {' '.join(args)}")
        run(*args)


def demo(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=1, max=1000, help="Simulated devices.")] = 100,
    duration: Annotated[float, typer.Option(min=2, max=300, help="Seconds of simulated traffic.")] = 15,
    keep: Annotated[bool, typer.Option(help="Keep the demo folder (database, server log) afterwards.")] = False,
) -> None:
    """Migrate a fresh demo database, start the API, simulate devices, dispatch commands, show the results."""
    import asyncio

    import httpx

    from core.access import keys as admin_keys
    from core.enrollment import tokens as credentials
    from core.storage import engine as core_db
    from core.storage import migrations
    from nexmdm_cli import simulation

    folder = Path(tempfile.mkdtemp(prefix="nexmdm-demo-"))
    database_url = f"sqlite:///{folder / 'nexmdm.db'}"
    settings = get_settings(data_dir=folder, database_url=database_url)
    info(f"[bold]1/6[/bold] migrating a fresh demo database in {escape(str(folder))}")
    from alembic import command

    command.upgrade(migrations.alembic_config(database_url), "head")
    engine = core_db.engine_from_settings(settings)
    with core_db.make_session_factory(engine, settings).begin() as db:
        enrollment_token, _ = credentials.create_enrollment_token(db, uses=devices, note="nexmdm demo")
        admin_key, _ = admin_keys.create_admin_key(db, name="demo")
    engine.dispose()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fcm_port = free_port()  # the simulation's fake FCM: the server's delivery worker pushes through it
    info(f"[bold]2/6[/bold] starting the API on {url}, pushing through a local fake FCM on port {fcm_port}")
    env = (
        os.environ
        | fake_fcm_env(folder, fcm_port)
        | {"NEXMDM_DATABASE_URL": database_url, "NEXMDM_DATA_DIR": str(folder), "NEXMDM_LOG_LEVEL": "WARNING"}
    )
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-c", _RUN_CLI, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    dispatched: list[str] = []
    try:
        wait_until_ready(url, server)
        info(f"[bold]3/6[/bold] simulating {devices} devices for {duration:.0f} s; dispatching commands on the way")
        sim = simulation.Simulation(
            url, enrollment_token, devices=devices, duration=duration, interval=2.0, poll_every=5, fcm_port=fcm_port
        )

        async def dispatch_commands(running: Simulation) -> None:
            await asyncio.sleep(min(3.0, duration / 4))
            targets = sorted(running.tokens)[: len(DEMO_COMMANDS)]
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as client:
                for index, (device_id, (action, payload)) in enumerate(zip(targets, DEMO_COMMANDS, strict=False)):
                    key = f"demo-{index + 1}"
                    body = {"action": action} | ({"payload": payload} if payload is not None else {})
                    path = f"/v1/devices/{device_id}/commands"
                    running.created[key] = time.monotonic()
                    response = await client.post(path, json=body, headers={"Idempotency-Key": key})
                    if response.status_code == 202:
                        dispatched.append(device_id)

        report = run_with_progress(sim, during=dispatch_commands)
    finally:
        stop(server)
        log.close()
    info("[bold]4/6[/bold] the API has stopped; the simulation's report:")
    render_report(report)

    info("[bold]5/6[/bold] what the operator sees (nexmdm devices list · heartbeats show · dispatches stats)")
    # the root group of this very invocation (a command module never imports the root app: no cycle)
    root = ctx.find_root().command
    shown = dispatched[0] if dispatched else next(iter(sorted(sim.tokens)), None)
    for args in (
        ["devices", "list", "--limit", "10"],
        ["heartbeats", "show", shown or "none", "--limit", "8"],
        ["dispatches", "stats", "--since", "1h"],
    ):
        out_console.rule(f"nexmdm {' '.join(args)}")
        with contextlib.suppress(SystemExit):
            root.main(["--database-url", database_url, *args], prog_name="nexmdm", standalone_mode=False)
    info(
        "[bold]6/6[/bold] an outcome-gated rollout: `nexmdm send install_apk --to demo=campaign "
        f"--until '{ROLLOUT_UNTIL}'` in waves of 25 % with --max-failure 10 %, while Galaxy A10s fail "
        "(INSUFFICIENT_STORAGE); then `nexmdm campaigns watch`, `show` and `failures`; then a profile "
        "(com.acme.pos at least 4200 and a setting) rolled out in two waves (`nexmdm profiles apply "
        "--wave-percent 50%`) that the devices apply and report on, and `nexmdm compliance --by reason` "
        "(and by model)"
    )
    campaign_phase(root, settings, database_url, folder, env)
    if keep:
        info(f"kept the demo folder {escape(str(folder))} (database and server.log)")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if report["enrolled"] == 0:
        raise typer.Exit(code=1)
