"""``nexmdm approvals``: destructive actions waiting for a second admin; approve, deny or cancel them.

A refusal (approving your own request, or one already decided, cancelled or expired) is audited: its
audit row commits, then the error is reported with its exit code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from core.base.clock import utcnow
from nexmdm_cli import render
from nexmdm_cli.render import CONTEXT, JsonOption, escape, group, note, relative, show, styled
from nexmdm_cli.render import table as make_table
from nexmdm_cli.state import CliState, print_json, state

app = group("Approvals of destructive actions (wipe): a second admin approves, any operator may cancel.")

IdArgument = Annotated[str, typer.Argument(help="The approval's id (apr_...).")]


def _target(item: dict[str, Any]) -> str:
    return f"{item['device_id']} ({item['target_id']})" if item["kind"] == "command" else item["target_id"]


@app.command("list", context_settings=CONTEXT)
def list_approvals(
    ctx: typer.Context,
    in_state: Annotated[
        str | None,
        typer.Option("--state", help="Only this state: awaiting_approval, approved, denied, cancelled, ..."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Approvals, newest first, with who asked and who decided."""
    from core import approvals

    with state(ctx).session() as db:
        items = approvals.list_approvals(db, state=in_state, limit=limit)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No approvals: a wipe sent by an admin appears here until a second admin decides.")
        return
    now = utcnow()
    out = make_table("Approvals", "id", "state", "action", "target", "requested by", "asked", "decided by", "release")
    for item in items:
        render.row(
            out,
            item["id"],
            styled(item["state"]),
            item["action"],
            _target(item),
            item["requested_by"],
            relative(item["requested_at"], now),
            item["decided_by"] or "",
            relative(item["release_at"], now) if item["state"] == "approved" else "",
        )
    show(out)


@app.command("show", context_settings=CONTEXT)
def show_approval(ctx: typer.Context, approval_id: IdArgument, json_output: JsonOption = False) -> None:
    """One approval: what it would do, who asked, who decided, when it is released or expires."""
    from core import approvals

    with state(ctx).session() as db:
        item = approvals.get_approval(db, approval_id)
    if json_output:
        print_json(item)
        return
    out = make_table(f"Approval {item['id']}", "field", "value")
    for field in ("state", "kind", "action", "target_id", "device_id", "requested_by", "requested_at"):
        render.row(out, field, "" if item[field] is None else str(item[field]))
    for field in ("expires_at", "decided_by", "decided_at", "release_at", "ended_by", "ended_at"):
        if item[field] is not None:
            render.row(out, field, str(item[field]))
    show(out)


def _decide(st: CliState, decide: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run a decision in one transaction; a refusal's audit row commits before the refusal is raised."""
    from core import approvals

    refusal: Exception | None = None
    with st.session() as db:
        try:
            item = decide(db)
        except approvals.REFUSALS as exc:
            refusal = exc
    if refusal is not None:
        raise refusal
    return item


def _done(item: dict[str, Any], verb: str, json_output: bool) -> None:
    if json_output:
        print_json(item)
        return
    note(f"[green]✅ approval {escape(item['id'])} {verb}: {escape(item['action'])} to {escape(_target(item))}[/green]")


@app.command(context_settings=CONTEXT)
def approve(ctx: typer.Context, approval_id: IdArgument, json_output: JsonOption = False) -> None:
    """Approve another admin's request; it is released after NEXMDM_DESTRUCTIVE_DELAY_SECONDS unless cancelled."""
    from core import approvals
    from core.events import audit

    st = state(ctx)
    item = _decide(st, lambda db: approvals.approve(db, st.settings, approval_id, actor=audit.cli_actor()))
    if not json_output:
        note(f"released at {escape(str(item['release_at']))} unless cancelled: nexmdm approvals cancel {item['id']}")
    _done(item, "approved", json_output)


@app.command(context_settings=CONTEXT)
def deny(ctx: typer.Context, approval_id: IdArgument, json_output: JsonOption = False) -> None:
    """Deny a request: nothing is sent (a campaign waiting for it is cancelled)."""
    from core import approvals
    from core.events import audit

    st = state(ctx)
    _done(_decide(st, lambda db: approvals.deny(db, approval_id, actor=audit.cli_actor())), "denied", json_output)


@app.command(context_settings=CONTEXT)
def cancel(ctx: typer.Context, approval_id: IdArgument, json_output: JsonOption = False) -> None:
    """Cancel a request before its release: while it awaits approval or during the cooling-off delay."""
    from core import approvals
    from core.events import audit

    st = state(ctx)
    item = _decide(st, lambda db: approvals.cancel(db, approval_id, actor=audit.cli_actor()))
    _done(item, "cancelled", json_output)
