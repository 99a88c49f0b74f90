"""``nexmdm cleanup``: retention cleanup, safe to run from cron.

A maintenance lock (``core.ops.locks``: a lease on PostgreSQL, across nodes, a ``flock`` beside the SQLite file)
makes a second run exit with code 75 (EX_TEMPFAIL) instead of deleting alongside the first. A real run
commits per bounded batch inside the helpers, so it gets a plain session, not one wrapping transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from nexmdm_cli import render
from nexmdm_cli.errors import EXIT_LOCKED
from nexmdm_cli.render import JsonOption, escape, note, show, table
from nexmdm_cli.state import CliState, err_console, print_json, state


def _days(help_text: str, least: int = 0) -> Any:
    return typer.Option(min=least, max=36500, metavar="N", help=help_text)


def cleanup(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")] = False,
    heartbeats_days: Annotated[
        int | None, _days("Keep heartbeats this many days (default: NEXMDM_HEARTBEAT_RETENTION_DAYS).")
    ] = None,
    dispatches_days: Annotated[
        int | None, _days("Keep finished dispatches this many days (default: NEXMDM_DISPATCH_RETENTION_DAYS).")
    ] = None,
    downloads_days: Annotated[
        int | None, _days("Keep APK download events this many days (default: NEXMDM_DOWNLOAD_RETENTION_DAYS).")
    ] = None,
    audit_days: Annotated[
        int | None, _days("Keep audit events this many days, at least 1 (default: NEXMDM_AUDIT_RETENTION_DAYS).", 1)
    ] = None,
    webhook_days: Annotated[
        int | None, _days("Keep finished webhook deliveries this many days (default: NEXMDM_WEBHOOK_RETENTION_DAYS).")
    ] = None,
    app_changes_days: Annotated[
        int | None, _days("Keep device app changes this many days (default: NEXMDM_APP_CHANGE_RETENTION_DAYS).")
    ] = None,
    locations_days: Annotated[
        int | None, _days("Keep device locations this many days (default: NEXMDM_LOCATION_RETENTION_DAYS).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Delete heartbeats, finished dispatches, download events, ended campaigns, audit events, webhook
    deliveries, device app changes, device locations and ended approvals past their retention period.

    Exit codes for cron: 0 done, 75 another cleanup holds the lock (try later), 5 database problem, 2 bad option.
    """
    from core.base.errors import LockTimeout
    from core.ops import locks

    st = state(ctx)
    st.require_migrated()
    overrides = {
        "device_heartbeats": heartbeats_days,
        "fcm_dispatches": dispatches_days,
        "apk_download_events": downloads_days,
        "audit_events": audit_days,
        "webhook_outbox": webhook_days,
        "device_app_changes": app_changes_days,
        "device_locations": locations_days,
    }
    retention = {
        entity: configured if (override := overrides.get(entity)) is None else override
        for entity, configured in st.settings.retention_days().items()
    }
    with locks.maintenance_lock(st.engine) as acquired:
        if not acquired:
            holder = locks.lock_holder(st.engine)
            by = f" ({escape(holder)})" if holder else ""
            note(
                f"[red]error:[/red] another cleanup holds the lock{by} on {escape(st.masked_url)}; "
                "nothing done, try later"
            )
            raise typer.Exit(code=EXIT_LOCKED)
        note(f"{'Counting (dry run) on' if dry_run else 'Cleaning up'} [bold]{escape(st.masked_url)}[/bold]")
        done: dict[str, int] = {}  # rows deleted per finished entity, as the run goes
        try:
            results = _run(st.session_factory, retention, dry_run=dry_run, lock_lost=acquired.lost, done=done)
        except LockTimeout as exc:  # stopped part-way (the lock lost, a lock kept timing out): what it deleted stays
            if not dry_run:
                if exc.field in retention and exc.deleted:
                    done[exc.field] = exc.deleted
                _audit(st, retention, done, stopped=exc.code)
            raise
        if not dry_run:  # deleting rows is an operator's decision: say who, with which periods, and how many
            _audit(st, retention, done)

    key = "would_delete" if dry_run else "deleted"
    if json_output:
        print_json({"database": st.masked_url, "dry_run": dry_run, "results": results})
        return
    out = table(
        "Retention cleanup (dry run: nothing deleted)" if dry_run else "Retention cleanup",
        "entity",
        "days",
        "cutoff (UTC)",
        "would delete" if dry_run else "deleted",
        "seconds",
    )
    for entity, result in results.items():
        cutoff, seconds = result["cutoff"].strftime("%Y-%m-%d %H:%M"), f"{result['latency_ms'] / 1000:.2f}"
        render.row(out, entity, str(retention[entity]), cutoff, f"{result[key]:,}", seconds)
    show(out)


def _audit(st: CliState, retention: dict[str, int], deleted: dict[str, int], stopped: str | None = None) -> None:
    """One ``retention.cleanup`` row: the periods used and the rows deleted per table (so far, if it stopped)."""
    from core.events import audit

    details: dict[str, Any] = {"days": retention, "deleted": {entity: deleted.get(entity, 0) for entity in retention}}
    if stopped is not None:
        details["stopped"] = stopped
    with st.session() as db:
        audit.record(db, audit.cli_actor(), "retention.cleanup", None, **details)


def _run(
    factory: Any,
    retention: dict[str, int],
    *,
    dry_run: bool,
    lock_lost: Callable[[], bool],
    done: dict[str, int],
) -> dict[str, dict[str, Any]]:
    """``run_all_retention_cleanups`` with a progress bar on stderr (shown only on a terminal); it stops at
    the next batch once the lock is lost."""
    from core.ops import retention as retention_engine

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with (
        Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as progress,
        factory() as db,
    ):
        task = progress.add_task("retention cleanup", total=len(retention_engine.CLEANUP_ENTITIES))

        def finished(entity: str, result: dict[str, Any]) -> None:
            done[entity] = result.get("deleted", 0)
            progress.advance(task)

        return retention_engine.run_all_retention_cleanups(
            db,
            dry_run=dry_run,
            retention_days=retention,
            on_result=finished,
            lock_lost=lock_lost,
        )
