"""``nexmdm devices``: the fleet view, one device, and revoking a lost one."""

from __future__ import annotations

from typing import Annotated

import typer

from core.clock import utcnow
from nexmdm_cli.lazy import lazy_module
from nexmdm_cli.render import (
    CONTEXT,
    JsonOption,
    YesOption,
    battery,
    confirm,
    dash,
    group,
    note,
    relative,
    show,
    stamp,
    styled,
    table,
    yes_no,
)
from nexmdm_cli.state import print_json, state

devices = lazy_module("core.devices")  # loaded by the command, not by `nexmdm --help`
audit = lazy_module("core.events.audit")  # the actor of audit rows: cli:USER@HOST

app = group("Devices: the fleet with last seen and online/stale/offline, one device, revoke.")


@app.command("list", context_settings=CONTEXT)
def list_devices(
    ctx: typer.Context,
    offline: Annotated[
        bool, typer.Option("--offline", help="Only devices not seen within NEXMDM_DEVICE_OFFLINE_SECONDS.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="At most this many devices.")] = 500,
    json_output: JsonOption = False,
) -> None:
    """The fleet: last seen, online/stale/offline/revoked, battery, network, agent version."""
    st = state(ctx)
    with st.session() as db:
        items = devices.list_devices(db, st.settings, offline_only=offline, limit=limit)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No offline devices." if offline else "No devices yet: enroll one with a `nexmdm tokens create` token.")
        return
    now = utcnow()
    title = "Offline devices" if offline else "Devices"
    out = table(title, "device", "state", "last seen", "battery", "network", "agent")
    for item in items:
        out.add_row(
            item["device_id"],
            styled(item["state"]),
            relative(item["last_seen_at"], now),
            battery(item["battery_pct"], item["plugged"]),
            dash(item["network_type"]),
            dash(item["agent_version"]),
        )
    counts: dict[str, int] = {}
    for item in items:
        counts[item["state"]] = counts.get(item["state"], 0) + 1
    out.caption = " · ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if len(items) == limit:
        out.caption += f" (the first {limit} by id: use --limit for more)"
    show(out)


@app.command("show", context_settings=CONTEXT)
def show_device(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device id.")],
    json_output: JsonOption = False,
) -> None:
    """One device: state, last heartbeat values, model, OS, agent, push token, pending commands."""
    st = state(ctx)
    with st.session() as db:
        data = devices.device_dict(devices.get_device(db, device_id), st.settings)
        data |= devices.device_activity(db, device_id)
    if json_output:
        print_json(data)
        return
    now = utcnow()
    out = table(f"Device {device_id}", "field", "value")
    out.add_row("state", styled(data["state"]))
    out.add_row("last seen", f"{relative(data['last_seen_at'], now)} ({stamp(data['last_seen_at'])})")
    out.add_row("status", dash(data["status"]))
    out.add_row("battery", battery(data["battery_pct"], data["plugged"]))
    out.add_row("plugged", yes_no(data["plugged"]))
    out.add_row("network", dash(data["network_type"]))
    out.add_row("agent version", dash(data["agent_version"]))
    out.add_row("model", dash(data["model"]))
    out.add_row("OS version", dash(data["os_version"]))
    out.add_row("push token", "yes" if data["has_fcm_token"] else "[yellow]none (polling only)[/yellow]")
    out.add_row("enrolled", f"{stamp(data['enrolled_at'])} ({relative(data['enrolled_at'], now)})")
    out.add_row("revoked", stamp(data["revoked_at"]) if data["revoked_at"] else "no")
    out.add_row("heartbeats stored", f"{data['heartbeats_stored']:,}")
    out.add_row("pending commands", str(data["pending_commands"]))
    show(out)


@app.command(context_settings=CONTEXT)
def revoke(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device id.")],
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Revoke a device: its token stops working at once; it can enroll again with a new enrollment token."""
    st = state(ctx)
    with st.session() as db:
        devices.get_device(db, device_id)  # unknown device: fail before asking
    if not yes:
        confirm(f"Revoke device {device_id} on {st.masked_url}? Its token stops working at once")
    with st.session() as db:
        data = devices.device_dict(devices.revoke_device(db, device_id, actor=audit.cli_actor()), st.settings)
    if json_output:
        print_json(data)
        return
    note(f"[green]✅ device {device_id} revoked on {st.masked_url}[/green]")
