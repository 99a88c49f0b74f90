"""``nexmdm heartbeats``: what a device has been reporting."""

from __future__ import annotations

from typing import Annotated

import typer

from core.clock import utcnow
from core.durations import parse_duration
from nexmdm_cli.lazy import lazy_module
from nexmdm_cli.render import CONTEXT, JsonOption, battery, dash, group, relative, show, stamp, styled, table, yes_no
from nexmdm_cli.state import print_json, state

devices = lazy_module("core.devices")  # loaded by the command, not by `nexmdm --help`

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
    window = parse_duration(since, field="--since")
    now = utcnow()
    with state(ctx).session() as db:
        device = devices.get_device(db, device_id)
        last_seen = device.last_seen_at
        beats = devices.recent_heartbeats(db, device_id, since=now - window, limit=limit)
    if json_output:
        print_json({"device_id": device_id, "since": now - window, "last_seen_at": last_seen, "items": beats})
        return
    if not beats:
        hint = f"last seen {relative(last_seen, now)}" if last_seen else "it has never sent one"
        show(f"No heartbeats from {device_id} in the last {since.strip()} ({hint}).")
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
        out.add_row(
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
