"""``nexmdm campaigns``: list, show, watch (live progress), pause, resume and cancel."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn

from core.base.clock import utcnow
from nexmdm_cli import render
from nexmdm_cli.commands.send import percent
from nexmdm_cli.render import (
    CONTEXT,
    JsonOption,
    YesOption,
    confirm,
    dash,
    escape,
    group,
    note,
    printable,
    relative,
    row,
    show,
    styled,
    table,
)
from nexmdm_cli.state import err_console, out_console, print_json, state

#: core.models.CAMPAIGN_FINAL (the models import SQLAlchemy)
CAMPAIGN_FINAL = ("completed", "cancelled")

app = group(
    "Campaigns: one command to many devices (kind command), or a profile version to them (kind profile: "
    "`nexmdm profiles apply --wave-percent`), in waves; progress, pause, resume, cancel."
)

CampaignId = Annotated[str, typer.Argument(metavar="ID", help="The campaign id (cmp_...).")]
BARS = (
    ("acked", "green"),
    ("failed", "red"),
    ("expired", "magenta"),
    ("cancelled", "bright_black"),
    ("pending", "yellow"),
    ("queued", "blue"),
)
#: a campaign with success_when: acked targets wait for their outcome
OUTCOME_BARS = (("succeeded", "green"), ("skipped", "cyan"), ("acked", "bright_green"), *BARS[1:])
#: a profile rollout: released devices wait for compliance (``pending``), the others are held (``queued``)
PROFILE_BARS = (("succeeded", "green"), ("failed", "red"), ("cancelled", "bright_black"), *BARS[-2:])


def _bars(c: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    if c.get("kind") == "profile":
        return PROFILE_BARS
    return OUTCOME_BARS if c.get("success_when") else BARS


def _what(c: dict[str, Any]) -> str:
    """A campaign's action, or the profile and versions a rollout moves between."""
    p = c.get("profile")
    if not p:
        return str(c["action"])
    return f"profile {p['name']} v{p['from_version'] or '—'} → v{p['to_version']}"


def _progress_text(c: dict[str, Any]) -> str:
    n = c["counts"]
    if c.get("kind") == "profile":
        return (
            f"{n['succeeded']:,}/{c['targeted']:,} compliant · {n['failed']:,} failed · "
            f"{n['pending']:,} awaiting compliance · {n['queued']:,} held"
        )
    failed = f"{n['failed'] + n['expired']:,} failed · {n['pending']:,} pending"
    if not c.get("success_when"):
        return f"{n['acked']:,}/{c['targeted']:,} acked · {failed}"
    return (
        f"{n['succeeded']:,}/{c['targeted'] - n['skipped']:,} succeeded · {n['skipped']:,} skipped · "
        f"{n['acked']:,} awaiting outcome · {failed}"
    )


@app.command("list", context_settings=CONTEXT)
def list_campaigns(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """Campaigns, newest first, with their status and progress."""
    from core import campaigns as fleet

    with state(ctx).session() as db:
        items = fleet.list_campaigns(db, limit=limit)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No campaigns yet: start one with `nexmdm send ACTION --to SELECTOR`.")
        return
    now = utcnow()
    out = table("Campaigns (newest first)", "id", "kind", "status", "action", "targets", "waves", "progress", "created")
    for c in items:
        render.row(
            out,
            c["id"],
            c.get("kind", "command"),
            styled(c["status"]),
            _what(c),
            dash(c["selector"]) if c["selector"] else f"{c['targeted']} devices",
            f"{c['waves']['released']}/{c['waves']['count']}",
            _progress_text(c),
            relative(c["created_at"], now),
        )
    show(out)


def _detail(c: dict[str, Any]) -> Any:
    now = utcnow()
    out = table(f"Campaign {c['id']}", "field", "value")
    render.row(out, "status", styled(c["status"]) + (f" ({printable(c['reason'])})" if c["reason"] else ""))
    render.row(out, "kind", c.get("kind", "command"))
    render.row(out, "action", _what(c))
    render.row(out, "targets", c["selector"] or "explicit device ids")
    if c.get("scope"):  # made by a scoped key: its targets are inside this scope
        render.row(out, "scope", c["scope"])
    render.row(out, "note", dash(c["note"]))
    w = c["waves"]
    render.row(out, "waves", f"{w['released']}/{w['count']} released, {w['size']:,} devices each")
    if w["interval_seconds"]:
        render.row(out, "wave interval", f"{w['interval_seconds']} s")
    if w["next_at"]:
        render.row(out, "next wave", relative(w["next_at"], now))
    render.row(out, "min success", f"{w['min_success_pct']}%" if w["min_success_pct"] is not None else "—")
    gate = "max noncompliant" if c.get("kind") == "profile" else "max failure"
    render.row(out, gate, f"{w['max_failure_pct']}%" if w["max_failure_pct"] is not None else "—")
    names = ["targeted", "queued", "pending", "acked", "failed", "expired", "cancelled", "pushed"]
    if c.get("profile"):
        render.row(out, "grace", f"{c['profile']['grace_seconds']} s to report compliant after a wave")
        names = ["targeted", "queued (held)", "pending (awaiting compliance)", "succeeded", "failed", "cancelled"]
    elif c.get("success_when"):
        render.row(out, "success when", c["success_when"])
        render.row(out, "outcome timeout", f"{c['outcome_timeout_seconds']} s after the ack")
        names = ["targeted", "skipped", "queued", "pending", "acked (awaiting outcome)", "succeeded", *names[4:]]
    for name in names:
        render.row(out, name, f"{c['counts'][name.split(' ')[0]]:,}")
    render.row(out, "created", relative(c["created_at"], now))
    render.row(out, "finished", relative(c["finished_at"], now) if c["finished_at"] else "—")
    return out


@app.command("show", context_settings=CONTEXT)
def show_campaign(ctx: typer.Context, campaign_id: CampaignId, json_output: JsonOption = False) -> None:
    """One campaign: status, waves, thresholds and counts per state."""
    from core import campaigns as fleet

    with state(ctx).session() as db:
        campaign = fleet.get_campaign(db, campaign_id)
    if json_output:
        print_json(campaign)
        return
    show(_detail(campaign))


@app.command("devices", context_settings=CONTEXT)
def campaign_devices(
    ctx: typer.Context,
    campaign_id: CampaignId,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only targets in this state: skipped, queued, pending, acked, succeeded, failed, expired, cancelled."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, by device id.")] = 50,
    after: Annotated[str | None, typer.Option(help="Start after this device id (the previous page's last).")] = None,
    json_output: JsonOption = False,
) -> None:
    """A campaign's targets (in one state) with the device's model and its ack's detail: why they failed."""
    from core import campaigns as fleet

    with state(ctx).session() as db:
        rows = fleet.campaign_devices(db, campaign_id, status=status, limit=limit + 1, after=after)
    items, more = rows[:limit], len(rows) > limit
    if json_output:
        print_json({"items": items, "next_cursor": items[-1]["device_id"] if more else None})
        return
    if not items:
        show(f"No targets of {campaign_id}" + (f" are {status}." if status else "."))
        return
    caption = f"more: --after {items[-1]['device_id']}" if more else None
    out = table(
        f"Campaign {campaign_id}", "device", "model", "wave", "status", "push", "finished", "detail", caption=caption
    )
    now = utcnow()
    for t in items:
        finished = relative(t["finished_at"], now) if t["finished_at"] else "—"
        row(
            out,
            t["device_id"],
            dash(t["model"]),
            str(t["wave"]),
            styled(t["status"]),
            dash(t["fcm_status"]),
            finished,
            dash(" · ".join(part for part in (t.get("error_code"), t["detail"]) if part)),  # TIMEOUT · 30 s passed
        )
    show(out)


@app.command(context_settings=CONTEXT)
def watch(
    ctx: typer.Context,
    campaign_id: CampaignId,
    every: Annotated[float, typer.Option(min=0.2, max=60, help="Seconds between refreshes.")] = 1.0,
    timeout: Annotated[
        float, typer.Option(min=0, help="Stop watching after this many seconds (0: until the campaign ends).")
    ] = 0,
    json_output: JsonOption = False,
) -> None:
    """Live progress bars per state, waves and ack rate, until the campaign completes or is cancelled."""
    from core import campaigns as fleet

    st = state(ctx)
    with st.session() as db:
        campaign = fleet.get_campaign(db, campaign_id)
    console = err_console if json_output else out_console  # stdout holds only the JSON document
    progress = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(bar_width=40),
        TextColumn("{task.completed:>8,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[extra]}"),
        console=console,
    )
    bars = _bars(campaign)
    tasks = {
        name: progress.add_task(f"[{color}]{name}[/{color}]", total=max(1, campaign["targeted"]), extra="")
        for name, color in bars
    }
    header = progress.add_task("[bold]waves[/bold]", total=campaign["waves"]["count"], extra="")
    started = time.monotonic()
    outcome = campaign.get("success_when") or campaign.get("kind") == "profile"
    rated, unit = ("succeeded", "successes") if outcome else ("acked", "acks")
    first = (started, campaign["counts"][rated])
    with Live(progress, console=console, transient=json_output, refresh_per_second=4):
        while True:
            w = campaign["waves"]
            elapsed = time.monotonic() - first[0]
            rate = (campaign["counts"][rated] - first[1]) / elapsed if elapsed > 0 else 0.0
            progress.update(header, completed=w["released"], extra=styled(campaign["status"]).markup)
            for name, _ in bars:
                extra = f"{rate:,.1f} {unit}/s while watched" if name == rated else ""
                progress.update(tasks[name], completed=campaign["counts"][name], extra=extra)
            if campaign["status"] in CAMPAIGN_FINAL or (timeout and time.monotonic() - started >= timeout):
                break
            time.sleep(every)
            with st.session() as db:
                campaign = fleet.get_campaign(db, campaign_id)
    if json_output:
        print_json(campaign)
        return
    if not console.is_terminal:
        console.line()  # Live ends without a newline when it is not drawing on a terminal
    console.print(f"campaign {escape(campaign_id)} {styled(campaign['status']).markup}: {_progress_text(campaign)}")


@app.command(context_settings=CONTEXT)
def pause(ctx: typer.Context, campaign_id: CampaignId, json_output: JsonOption = False) -> None:
    """Stop releasing waves (commands already released stay pending)."""
    from core import campaigns as fleet
    from core.events import audit

    with state(ctx).session() as db:
        campaign = fleet.pause(db, campaign_id, actor=audit.cli_actor())
    _done(campaign, json_output, "paused")


@app.command(context_settings=CONTEXT)
def resume(
    ctx: typer.Context,
    campaign_id: CampaignId,
    ignore_failures: Annotated[
        bool, typer.Option("--ignore-failures", help="Resume a halted campaign without its thresholds.")
    ] = False,
    min_success: Annotated[str | None, typer.Option(help="New --min-success threshold: 80%.")] = None,
    max_failure: Annotated[str | None, typer.Option(help="New --max-failure threshold: 10%.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Resume a paused campaign; a halted one needs new thresholds or --ignore-failures."""
    from core import campaigns as fleet
    from core.events import audit

    with state(ctx).session() as db:
        campaign = fleet.resume(
            db,
            campaign_id,
            ignore_failures=ignore_failures,
            min_success_pct=percent(min_success, "--min-success"),
            max_failure_pct=percent(max_failure, "--max-failure"),
            actor=audit.cli_actor(),
        )
    _done(campaign, json_output, "running")


@app.command(context_settings=CONTEXT)
def cancel(
    ctx: typer.Context, campaign_id: CampaignId, yes: YesOption = False, json_output: JsonOption = False
) -> None:
    """Cancel a campaign: its queued and pending commands are cancelled at once."""
    from core import campaigns as fleet
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        campaign = fleet.get_campaign(db, campaign_id)
    if not yes and campaign["status"] != "cancelled":
        pending = campaign["counts"]["queued"] + campaign["counts"]["pending"]
        confirm(f"Cancel campaign {printable(campaign_id)} ({pending:,} commands not yet done) on {st.masked_url}?")
    with st.session() as db:
        campaign = fleet.cancel(db, campaign_id, actor=audit.cli_actor())
    _done(campaign, json_output, "cancelled")


def _done(campaign: dict[str, Any], json_output: bool, verb: str) -> None:
    if json_output:
        print_json(campaign)
        return
    note(f"[green]✅ campaign {escape(campaign['id'])} {verb}[/green]: {_progress_text(campaign)}")


@app.command(context_settings=CONTEXT)
def failures(
    ctx: typer.Context,
    campaign_id: CampaignId,
    reason: Annotated[
        str | None, typer.Option(help="List the failed devices of this reason (with --model, --os-version).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="With --reason: only this model.")] = None,
    os_version: Annotated[str | None, typer.Option(help="With --reason: only this OS version.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many devices, by device id.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Why targets failed: groups by reason, model and OS version ('31 × INSUFFICIENT_STORAGE on Galaxy A10 / 11').

    With --reason, the devices of that group with their ack's detail.
    """
    from core import campaigns as fleet

    with state(ctx).session() as db:
        if reason is None and model is None and os_version is None:
            report = fleet.failure_groups(db, campaign_id)
        else:
            devices = fleet.failed_devices(
                db, campaign_id, reason=reason, model=model, os_version=os_version, limit=limit
            )
            report = {"campaign_id": campaign_id, "items": devices}
    if json_output:
        print_json(report)
        return
    if "items" in report:
        out = table(f"Failed devices of {campaign_id}", "device", "reason", "model", "OS", "failed", "detail")
        now = utcnow()
        for d in report["items"]:
            failed_at = relative(d["failed_at"], now) if d["failed_at"] else "—"
            row(out, d["device_id"], d["reason"], d["model"], d["os_version"], failed_at, dash(d["detail"]))
        show(out if report["items"] else f"No failed device of {campaign_id} matches.")
        return
    if not report["groups"]:
        show(f"No target of {campaign_id} failed.")
        return
    out = table(f"Failures of {campaign_id}: {report['failed']:,} targets", "failures", "sample devices")
    for g in report["groups"]:
        row(
            out,
            f"{g['count']:,} × {g['reason']} on {g['model']} / {g['os_version']}",
            ", ".join(g["sample_device_ids"]),
        )
    show(out)
    note(f"the devices of one group: nexmdm campaigns failures {escape(campaign_id)} --reason REASON")
