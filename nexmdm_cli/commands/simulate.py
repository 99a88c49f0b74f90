"""``nexmdm simulate``: simulated devices against a running API, with a latency and throughput report.

``--fcm`` starts a local fake FCM and a ``nexmdm worker`` pointed at it (same database), creates
commands for random devices at ``--command-rate``, and each device fetches and acknowledges its commands
when their push reaches it: the report then shows push and ack latency end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nexmdm_cli import render
from nexmdm_cli.errors import EXIT_USAGE
from nexmdm_cli.state import CliState, err_console, out_console, print_json, state

if TYPE_CHECKING:
    import asyncio

    from nexmdm_cli.simulation import Simulation

_RUN_CLI = "from nexmdm_cli.main import run; run()"


#: something to run beside a simulation (sending commands while devices heartbeat)
During = Callable[["Simulation"], Coroutine[Any, Any, None]]


def run_with_progress(sim: Simulation, during: During | None = None) -> dict[str, Any]:
    """Run a simulation with a live progress bar on stderr."""
    import asyncio  # here: `nexmdm --help` and the other commands do not need it

    progress = Progress(
        TextColumn("[bold]simulating[/bold]"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = progress.add_task("enrolling...", total=1.0)

    def tick(s: Simulation, done: float) -> None:
        st = s.stats
        progress.update(
            task,
            completed=done,
            description=f"{st.enrolled} devices · {st.requests} requests · {st.beats_created} stored / "
            f"{st.beats_deduplicated} dedup beats · {st.commands_acked} acks · {sum(st.errors().values())} errors",
        )

    with progress, asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(sim.run(on_tick=tick, during=during))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: less of the simulator's own time in every latency it measures."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


def run_parts_with_progress(options: dict[str, Any], processes: int) -> dict[str, Any]:
    """Run a simulation split over several processes, with a progress bar of the elapsed time."""
    from nexmdm_cli.simulation_parts import run_in_processes

    progress = Progress(
        TextColumn(f"[bold]simulating[/bold] in {processes} processes"),
        BarColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = progress.add_task("", total=1.0)
    with progress:
        return run_in_processes(options, processes, on_tick=lambda done: progress.update(task, completed=done))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_fcm_env(folder: Path, port: int) -> dict[str, str]:
    """Settings that point a server or worker at the simulator's fake FCM on ``port``."""
    from nexmdm_cli.fakefcm import PROJECT, write_service_account

    url = f"http://127.0.0.1:{port}"
    key = write_service_account(folder / "fake-fcm-service-account.json", f"{url}/token")
    return {"NEXMDM_FCM_CREDENTIALS": str(key), "NEXMDM_FCM_ENDPOINT": url, "NEXMDM_FCM_PROJECT_ID": PROJECT}


@contextmanager
def delivery_worker(st: CliState, folder: Path, port: int) -> Iterator[None]:
    """A ``nexmdm worker`` on this database, pushing through the fake FCM; stopped afterwards."""
    env = os.environ | fake_fcm_env(folder, port) | {"NEXMDM_DATABASE_URL": st.settings.database_url}
    with (folder / "worker.log").open("wb") as log:
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-c", _RUN_CLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


def command_creator(st: CliState, rate: float) -> During:
    """Create ``rate`` commands a second for random enrolled devices, straight in the database."""
    import asyncio

    from core.commands import dispatches

    def create(request_id: str, device_id: str) -> None:
        with st.session() as db:
            dispatches.create_command(db, st.settings, request_id=request_id, device_id=device_id, action="sync")

    async def during(sim: Simulation) -> None:
        deadline = time.monotonic() + sim.duration
        n = 0
        while time.monotonic() < deadline - 2.0:  # leave time for the last ones to arrive
            await asyncio.sleep(1 / rate)
            if not sim.tokens:
                continue
            n += 1
            request_id = f"{sim.prefix}-cmd-{n}"
            device_id = sim.rng.choice(sorted(sim.tokens))
            sim.created[request_id] = time.monotonic()
            await asyncio.to_thread(create, request_id, device_id)

    return during


def render_report(report: dict[str, Any]) -> None:
    table = Table(
        title=f"Simulation: {report['devices']} devices, {report['elapsed_s']} s "
        f"(enrollment {report['enroll_s']} s; rates are per phase)",
        title_justify="left",
    )
    for column in ("endpoint", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for endpoint, row in report["endpoints"].items():
        render.row(
            table,
            endpoint,
            *(
                str("-" if row[k] is None else row[k])
                for k in ("requests", "errors", "throughput_rps", "p50_ms", "p95_ms", "p99_ms")
            ),
        )
    out_console.print(table)
    render_convergence(report.get("profile_convergence", []))
    beats = report["heartbeats"]
    errors = ", ".join(f"{status}: {n}" for status, n in report["errors_by_status"].items()) or "none"
    out_console.print(
        f"{report['enrolled']}/{report['devices']} enrolled · {report['requests']} requests "
        f"({report['throughput_rps']}/s) · heartbeats {beats['created']} stored, {beats['deduplicated']} deduplicated"
        f" · {report['commands_acked']} commands acked · errors by status: {errors}"
    )


def render_convergence(rows: list[dict[str, Any]]) -> None:
    """Per effective hash seen: seconds from the first device told of it until 50/90/99 % of the devices told
    had a report on it judged; "told p99" is the heartbeats' own share of that (the floor)."""
    if not rows:
        return
    table = Table(
        title="Profile convergence (seconds from the first device told; run time at which it was told)",
        title_justify="left",
    )
    columns = ("effective hash", "told at", "told", "reported", "compliant", "noncompliant", "converged")
    for column in (*columns, "p50 s", "p90 s", "p99 s", "told p99 s"):
        table.add_column(column, justify="left" if column == "effective hash" else "right")
    for row in rows:
        figures = (row[k] for k in ("p50_s", "p90_s", "p99_s", "told_p99_s"))
        render.row(
            table,
            row["effective_hash"][:12],
            f"{row['first_told_s']} s",
            *(str(row[k]) for k in ("devices_told", "devices_reported", "compliant", "noncompliant")),
            f"{row['converged_pct']} %",
            *("-" if value is None else str(value) for value in figures),
        )
    out_console.print(table)


def simulate(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=1, max=100_000, help="Number of simulated devices.")] = 100,
    duration: Annotated[
        float, typer.Option(min=0.5, max=86_400, help="Seconds of heartbeating after enrollment.")
    ] = 15,
    url: Annotated[str, typer.Option(help="Base URL of a running API on this machine.")] = "http://127.0.0.1:8000",
    interval: Annotated[float, typer.Option(min=0.05, help="Mean seconds between a device's heartbeats (±20 %).")] = 5,
    enrollment_token: Annotated[
        str | None,
        typer.Option(
            envvar="NEXMDM_ENROLLMENT_TOKEN", help="Enroll with this token (else one is created in the database)."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=5000, help="Requests in flight at most, per simulator process.")
    ] = 64,
    processes: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Split the devices over this many processes (the client never sets the tail)."
        ),
    ] = 1,
    fcm: Annotated[
        bool,
        typer.Option(
            "--fcm",
            help="Start a local fake FCM and a `nexmdm worker` pushing through it; devices ack commands on push.",
        ),
    ] = False,
    command_rate: Annotated[
        float, typer.Option(min=0.01, max=1000, help="With --fcm: commands created per second (random devices).")
    ] = 1.0,
    ramp_up: Annotated[
        float,
        typer.Option(min=0, max=86_400, help="Seconds over which devices come online after enrolling (0: at once)."),
    ] = 0,
    fail: Annotated[
        list[str] | None,
        typer.Option(
            "--fail",
            help="A failure rule FIELD=VALUE:ACTION:CODE (repeatable): matching devices ack ACTION failed with CODE, "
            "e.g. 'model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE'.",
        ),
    ] = None,
    build: Annotated[
        list[str] | None,
        typer.Option(
            "--build",
            help="What an APK build installs, ID=PACKAGE:VERSION_CODE (repeatable): a completed install_apk of that "
            "build puts the version in the device's inventory, e.g. '1=com.acme.pos:4200'.",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as one JSON document.")] = False,
) -> None:
    """Simulate devices against a running API: enroll, heartbeat, fetch and acknowledge commands, apply profiles;
    report latency and how fast each profile change converged."""
    from core.enrollment import tokens as credentials
    from core.events import audit
    from nexmdm_cli import simulation, simulation_faults

    base = simulation.check_loopback(url)
    fail_rules = tuple(simulation_faults.parse_rule(rule) for rule in fail or [])
    builds = dict(simulation_faults.parse_build(text) for text in build or [])
    if fcm and processes > 1:
        err_console.print("[red]error:[/red] --fcm runs in one process (pushes reach devices in its own loop)")
        raise typer.Exit(code=EXIT_USAGE)
    st = state(ctx) if enrollment_token is None or fcm else None
    if enrollment_token is None:
        assert st is not None
        with st.session() as db:
            enrollment_token, _ = credentials.create_enrollment_token(
                db, uses=devices, expires_in=timedelta(hours=1), note="nexmdm simulate", actor=audit.cli_actor()
            )
    options: dict[str, Any] = {
        "url": base,
        "enrollment_token": enrollment_token,
        "devices": devices,
        "duration": duration,
        "interval": interval,
        "concurrency": concurrency,
        "ramp_up": ramp_up,
        "fail_rules": fail_rules,
        "builds": builds,
    }
    if processes > 1:
        report = run_parts_with_progress(options, processes)
    elif fcm:
        assert st is not None
        st.require_migrated()
        port = free_port()
        sim = simulation.Simulation(**options, fcm_port=port)
        with tempfile.TemporaryDirectory(prefix="nexmdm-simulate-") as folder, delivery_worker(st, Path(folder), port):
            report = run_with_progress(sim, during=command_creator(st, command_rate))
    else:
        report = run_with_progress(simulation.Simulation(**options))
    if json_output:
        print_json(report)
    else:
        render_report(report)
    if report["enrolled"] == 0:
        err_console.print("[red]error:[/red] no device could enroll (is the API running, and the token valid?)")
        raise typer.Exit(code=1)
