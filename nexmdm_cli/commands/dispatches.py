"""``nexmdm dispatches``: commands sent to devices, their push and their acknowledgement."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from core.base.clock import utcnow
from core.base.durations import format_duration, parse_duration
from core.base.errors import InvalidArgument
from core.base.statuses import COMMAND_STATUSES
from nexmdm_cli import render
from nexmdm_cli.render import CONTEXT, JsonOption, dash, escape, group, ms, note, relative, show, stamp, styled, table
from nexmdm_cli.state import print_json, state

app = group("Commands dispatched to devices: statistics, one command, recent commands, cancel.")

#: the seed's threshold: more replays than this share of requests means clients retry too eagerly
HIT_RATE_WARNING = 0.05


@app.command(context_settings=CONTEXT)
def stats(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="Window: 15m, 24h, 7d, 2w...")] = "24h",
    json_output: JsonOption = False,
) -> None:
    """Totals by status, action and push status; idempotency hit rate; push and ack latency p50/p95."""
    from core.commands import dispatches

    window = parse_duration(since, field="--since")
    with state(ctx).read_session() as db:
        data = dispatches.dispatch_stats(db, since=utcnow() - window)
    data["idempotency_hit_rate_high"] = data["idempotency_hit_rate"] > HIT_RATE_WARNING
    if json_output:
        print_json(data)
        return
    show(Group(*_stats_tables(data, since.strip())))


def _counts(title: str, counts: dict[str, int], total: int) -> Any:
    out = table(title, "value", "count", "share")
    for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        render.row(out, styled(key), f"{count:,}", f"{count / total:.1%}" if total else "—")
    return out


def _stats_tables(data: dict[str, Any], window: str) -> list[Any]:
    total = data["total"]
    summary = table(f"Dispatches in the last {window}", "measure", "value")
    render.row(summary, "commands", f"{total:,}")
    render.row(summary, "requests (commands + replays)", f"{data['requests']:,}")
    render.row(summary, "replays", f"{data['replays']:,}")
    rate = Text(f"{data['idempotency_hit_rate']:.1%}")
    if data["idempotency_hit_rate_high"]:
        rate = Text(f"{rate} (above {HIT_RATE_WARNING:.0%}: clients are retrying a lot)", style="yellow")
    render.row(summary, "idempotency hit rate", rate)
    for label, key in (("push latency", "push_latency_ms"), ("ack latency", "ack_latency_ms")):
        lat = data[key]
        value = f"p50 {ms(lat['p50'])} · p95 {ms(lat['p95'])} ({lat['count']:,} known)" if lat["count"] else "—"
        render.row(summary, label, value)
    if not total:
        return [summary]
    return [
        summary,
        _counts("By status", data["by_status"], total),
        _counts("By action", data["by_action"], total),
        _counts("By push (FCM) status", data["by_fcm_status"], total),
    ]


@app.command("show", context_settings=CONTEXT)
def show_dispatch(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The command's request id (its Idempotency-Key).")],
    json_output: JsonOption = False,
) -> None:
    """One command: device, action, payload, status, push status, replays, the ack's result or error code, and
    its status history."""
    from core.commands import dispatches

    with state(ctx).session() as db:
        data = dispatches.get_dispatch(db, request_id)
    if json_output:
        print_json(data)
        return
    now = utcnow()
    out = table(f"Command {request_id}", "field", "value")
    for name in ("device_id", "action", "payload"):
        render.row(out, name, dash(data[name]))
    render.row(out, "status", styled(data["status"]))
    render.row(out, "push (FCM) status", styled(data["fcm_status"]))
    render.row(out, "created", f"{stamp(data['created_at'])} ({relative(data['created_at'], now)})")
    render.row(out, "push attempts", str(data["attempts"]))
    render.row(out, "last push error", dash(data["last_error"]))
    if data["next_attempt_at"] and data["fcm_status"] == "pending":
        render.row(
            out, "next push attempt", f"{stamp(data['next_attempt_at'])} ({relative(data['next_attempt_at'], now)})"
        )
    render.row(out, "FCM message id", dash(data["fcm_message_id"]))
    render.row(out, "replays", str(data["replay_count"]))
    render.row(out, "ack detail", dash(data["ack_detail"]))
    render.row(out, "result", dash(json.dumps(data["result"], sort_keys=True) if data["result"] is not None else None))
    render.row(out, "error code", dash(data["error_code"]))
    steps = table("History", "status", "at (UTC)", "after")
    for step in data["history"]:
        after = step["at"] - data["created_at"]
        waited = format_duration(after) if after.total_seconds() else "—"
        render.row(steps, styled(step["status"]), stamp(step["at"]), waited)
    show(Group(out, steps))


@app.command("list", context_settings=CONTEXT)
def list_dispatches(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option(help="Only this device's commands.")] = None,
    status: Annotated[str | None, typer.Option(help=f"Only this status: {', '.join(COMMAND_STATUSES)}.")] = None,
    since: Annotated[str | None, typer.Option(help="Only commands created within this window (24h, 7d...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many commands.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Recent commands, newest first."""
    from core.commands import dispatches

    if status is not None and status not in COMMAND_STATUSES:
        raise InvalidArgument(f"--status must be one of {', '.join(COMMAND_STATUSES)}; got {status!r}")
    start = utcnow() - parse_duration(since, field="--since") if since else None
    with state(ctx).read_session() as db:
        items = dispatches.list_dispatches(db, device_id=device, status=status, since=start, limit=limit)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No commands match.")
        return
    now = utcnow()
    out = table("Commands (newest first)", "request id", "device", "action", "status", "push", "created")
    for item in items:
        render.row(
            out,
            item["request_id"],
            item["device_id"],
            item["action"],
            styled(item["status"]),
            styled(item["fcm_status"]),
            relative(item["created_at"], now),
        )
    show(out)


@app.command(context_settings=CONTEXT)
def cancel(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The command's request id (its Idempotency-Key).")],
    json_output: JsonOption = False,
) -> None:
    """Cancel a pending command: it leaves the device's pending list, and a late ack is refused (409)."""
    from core.commands import dispatches
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        changed, data = dispatches.cancel_command(db, request_id, actor=audit.cli_actor())
    if json_output:
        print_json(data)
        return
    note(f"[green]✅ command {escape(request_id)} {'cancelled' if changed else 'was already cancelled'}[/green]")
