"""``nexmdm simulate``: simulated devices against a running API, with a latency and throughput report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nexmdm_cli.lazy import lazy_module
from nexmdm_cli.simulation import Simulation, check_loopback
from nexmdm_cli.state import err_console, out_console, print_json, state

credentials = lazy_module("core.credentials")


def run_with_progress(sim: Simulation, during: Callable[[Simulation], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Run a simulation with a live progress bar on stderr."""
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

    with progress:
        return asyncio.run(sim.run(on_tick=tick, during=during))


def render_report(report: dict[str, Any]) -> None:
    table = Table(
        title=f"Simulation: {report['devices']} devices, {report['elapsed_s']} s "
        f"(enrollment {report['enroll_s']} s; rates are per phase)",
        title_justify="left",
    )
    for column in ("endpoint", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for endpoint, row in report["endpoints"].items():
        table.add_row(
            endpoint,
            *(
                str("-" if row[k] is None else row[k])
                for k in ("requests", "errors", "throughput_rps", "p50_ms", "p95_ms", "p99_ms")
            ),
        )
    out_console.print(table)
    beats = report["heartbeats"]
    errors = ", ".join(f"{status}: {n}" for status, n in report["errors_by_status"].items()) or "none"
    out_console.print(
        f"{report['enrolled']}/{report['devices']} enrolled · {report['requests']} requests "
        f"({report['throughput_rps']}/s) · heartbeats {beats['created']} stored, {beats['deduplicated']} deduplicated"
        f" · {report['commands_acked']} commands acked · errors by status: {errors}"
    )


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
        int,
        typer.Option(
            min=1, max=1000, help="Requests in flight at most (one httpx client; its pool gets slow past a few dozen)."
        ),
    ] = 16,
    ramp_up: Annotated[
        float,
        typer.Option(min=0, max=86_400, help="Seconds over which devices come online after enrolling (0: at once)."),
    ] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as one JSON document.")] = False,
) -> None:
    """Simulate devices against a running API: enroll, heartbeat, fetch and acknowledge commands; report latency."""
    base = check_loopback(url)
    if enrollment_token is None:
        st = state(ctx)
        with st.session() as db:
            enrollment_token, _ = credentials.create_enrollment_token(
                db, uses=devices, expires_in=timedelta(hours=1), note="nexmdm simulate"
            )
    sim = Simulation(
        base,
        enrollment_token,
        devices=devices,
        duration=duration,
        interval=interval,
        concurrency=concurrency,
        ramp_up=ramp_up,
    )
    report = run_with_progress(sim)
    if json_output:
        print_json(report)
    else:
        render_report(report)
    if report["enrolled"] == 0:
        err_console.print("[red]error:[/red] no device could enroll (is the API running, and the token valid?)")
        raise typer.Exit(code=1)
