"""``nexmdm heartbeats``: what a device has been reporting."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from core.base.clock import utcnow
from core.base.durations import parse_duration
from nexmdm_cli import render, sparklines
from nexmdm_cli.render import (
    CONTEXT,
    JsonOption,
    battery,
    dash,
    escape,
    group,
    printable,
    relative,
    show,
    stamp,
    styled,
    table,
    yes_no,
)
from nexmdm_cli.state import out_console, print_json, state

app = group("Heartbeats: what each device has been reporting.")


@app.command("show", context_settings=CONTEXT)
def show_heartbeats(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID", help="The device, as it enrolled.")],
    since: Annotated[str, typer.Option(help="How far back: 90s, 15m, 24h, 7d, 2w.")] = "24h",
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many heartbeats.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """A device's recent heartbeats, newest first: when, status, battery, plugged, network, agent version."""
    from core.devices import records as devices
    from core.heartbeats import trends

    window = parse_duration(since, field="--since")
    now = utcnow()
    with state(ctx).read_session() as db:
        device = devices.get_device(db, device_id)
        last_seen = device.last_seen_at
        beats = devices.recent_heartbeats(db, device_id, since=now - window, limit=limit)
        slots = (
            []
            if json_output or not beats
            else trends.slots(db, device_id, since=now - window, until=now, count=_trend_width())
        )
    if json_output:
        print_json({"device_id": device_id, "since": now - window, "last_seen_at": last_seen, "items": beats})
        return
    if not beats:
        hint = f"last seen {relative(last_seen, now)}" if last_seen else "it has never sent one"
        show(f"No heartbeats from {escape(device_id)} in the last {escape(since.strip())} ({hint}).")
        return
    out = table(
        f"Heartbeats of {device_id}, last {since.strip()} (newest first)",
        "received",
        "at (UTC)",
        "status",
        "battery",
        "plugged",
        "network",
        "agent",
    )
    for beat in beats:
        render.row(
            out,
            relative(beat["received_at"], now),
            stamp(beat["received_at"]),
            styled(beat["status"]),
            battery(beat["battery_pct"]),
            yes_no(beat["plugged"]),
            dash(beat["network_type"]),
            dash(beat["agent_version"]),
        )
    if len(beats) == limit:
        out.caption = f"showing the newest {limit}; use --limit for more"
    show(out)
    show(_trend(slots, since.strip()))


#: characters in a trend line (one per time slot of the --since window), fewer on a narrow terminal
TREND_SLOTS = 48


def _trend_width() -> int:
    return max(12, min(TREND_SLOTS, out_console.width - 10))


def _trend(slots: list[dict[str, Any]], window: str) -> Table:
    """Battery and network over the whole --since window (every beat, not only the rows listed)."""
    levels = [s["battery_pct"] for s in slots if s["battery_pct"] is not None]
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, min_width=7)
    grid.add_column(no_wrap=True, min_width=len(slots))
    span = f"{levels[0]}% → {levels[-1]}%, min {min(levels)}%, max {max(levels)}%" if levels else "no readings"
    render.row(grid, "battery", Text(sparklines.battery(slots), style="green"))
    render.row(grid, "", Text(span, style="dim"))
    render.row(grid, "network", sparklines.network(slots))
    render.row(grid, "", Text(printable(sparklines.network_legend(slots)), style="dim"))
    render.row(grid, "", Text(f"{printable(window)} ago".ljust(len(slots) - 3) + "now", style="dim"))
    return grid
