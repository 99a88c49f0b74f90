"""``nexmdm devices``: the fleet view, one device, and revoking a lost one."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.text import Text

from core.base.clock import utcnow
from core.base.errors import InvalidArgument
from nexmdm_cli import render, sparklines
from nexmdm_cli.render import (
    CONTEXT,
    JsonOption,
    YesOption,
    battery,
    confirm,
    dash,
    escape,
    group,
    note,
    printable,
    relative,
    show,
    stamp,
    styled,
    table,
    yes_no,
)
from nexmdm_cli.state import print_json, state

_COMPLIANCE = {"compliant": "green", "noncompliant": "red", "pending": "yellow", "unknown": "dim"}
#: the presence strip: the last 24 hours in half-hour slots
PRESENCE = timedelta(hours=24)
PRESENCE_SLOTS = 48

app = group("Devices: the fleet with last seen and online/stale/offline, one device, revoke.")


@app.command("list", context_settings=CONTEXT)
def list_devices(
    ctx: typer.Context,
    offline: Annotated[
        bool, typer.Option("--offline", help="Only devices not seen within NEXMDM_DEVICE_OFFLINE_SECONDS.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="At most this many devices.")] = 500,
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Only devices matching: 'store=42,@state=offline'.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """The fleet: last seen, online/stale/offline/revoked, battery, network, agent version, labels."""
    from core.devices import listing as device_list

    st = state(ctx)
    with st.read_connection() as db:
        items = device_list.list_devices(db, st.settings, offline_only=offline, limit=limit, selector=selector)
        device_list.attach_labels(db, items)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        if selector is not None:
            show(f"No device matches {escape(repr(selector))}.")
            return
        show("No offline devices." if offline else "No devices yet: enroll one with a `nexmdm tokens create` token.")
        return
    now = utcnow()
    title = "Offline devices" if offline else "Devices"
    out = table(title, "device", "state", "last seen", "battery", "network", "agent", "labels")
    for item in items:
        render.row(
            out,
            item["device_id"],
            styled(item["state"]),
            relative(item["last_seen_at"], now),
            battery(item["battery_pct"], item["plugged"]),
            dash(item["network_type"]),
            dash(item["agent_version"]),
            ",".join(f"{k}={v}" for k, v in item["labels"].items()) or "—",
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
    apps: Annotated[bool, typer.Option("--apps", help="Also list the device's reported apps.")] = False,
    json_output: JsonOption = False,
) -> None:
    """One device: state, last heartbeat values, model, OS, agent, push token, pending commands, labels, its
    reported inventory and recent app changes; in lost mode, its last known location (a read recorded in the
    audit trail as location.read)."""
    from core.devices import labels as labels_module
    from core.devices import locations
    from core.devices import records as devices
    from core.events import audit
    from core.heartbeats import trends
    from core.profiles import compliance
    from nexmdm_cli import inventory_view

    st = state(ctx)
    with st.session() as db:
        data = devices.device_dict(devices.get_device(db, device_id), st.settings)
        data |= devices.device_activity(db, device_id)
        data["labels"] = labels_module.device_labels(db, device_id)
        data |= inventory_view.read(db, device_id, with_apps=apps)
        # where a lost device is: personal data, read (and audited) only while the device is in lost mode
        lost = locations.lost_mode_of(db, device_id) is not None
        data["lost_mode"] = locations.last_location(db, device_id, actor=audit.cli_actor()) if lost else None
        data["compliance"] = compliance.device_compliance(db, st.settings, device_id)
        now = utcnow()
        day = [] if json_output else trends.slots(db, device_id, since=now - PRESENCE, until=now, count=PRESENCE_SLOTS)
    if json_output:
        print_json(data)
        return
    out = table(f"Device {device_id}", "field", "value")
    render.row(out, "state", styled(data["state"]))
    render.row(out, "last seen", f"{relative(data['last_seen_at'], now)} ({stamp(data['last_seen_at'])})")
    render.row(out, "status", dash(data["status"]))
    render.row(out, "battery", battery(data["battery_pct"], data["plugged"]))
    render.row(out, "plugged", yes_no(data["plugged"]))
    render.row(out, "network", dash(data["network_type"]))
    render.row(out, "agent version", dash(data["agent_version"]))
    render.row(out, "model", dash(data["model"]))
    render.row(out, "OS version", dash(data["os_version"]))
    render.row(out, "push token", "yes" if data["has_fcm_token"] else Text("none (polling only)", style="yellow"))
    render.row(out, "enrolled", f"{stamp(data['enrolled_at'])} ({relative(data['enrolled_at'], now)})")
    render.row(out, "revoked", stamp(data["revoked_at"]) if data["revoked_at"] else "no")
    render.row(out, "generation", str(data["generation"]))
    render.row(out, "heartbeats stored", f"{data['heartbeats_stored']:,}")
    heard = sum(1 for slot in day if slot["beats"])
    render.row(
        out,
        "heard from (24h)",
        Text.assemble(
            (sparklines.presence(day), "green"),
            (
                f"\n{'24h ago'.ljust(PRESENCE_SLOTS - 3)}now\n{heard} of {PRESENCE_SLOTS} half-hours with a heartbeat",
                "dim",
            ),
        ),
    )
    render.row(out, "pending commands", str(data["pending_commands"]))
    render.row(out, "labels", ", ".join(f"{k}={v}" for k, v in data["labels"].items()) or "—")
    _lost_mode_rows(out, data["lost_mode"], now)
    judged = data["compliance"]
    reasons = f" ({', '.join(judged['reasons'])})" if judged["reasons"] else ""
    profile = f", profile {judged['effective_hash'][:12]}" if judged["effective_hash"] else ", no profile"
    render.row(out, "compliance", Text(f"{judged['state']}{reasons}{profile}", style=_COMPLIANCE[judged["state"]]))
    show(out)
    inventory_view.render_inventory(data, now)


def _lost_mode_rows(out: Any, whereabouts: dict[str, Any] | None, now: Any) -> None:
    if whereabouts is None:
        render.row(out, "lost mode", "no")
        return
    lost, fix = whereabouts["lost_mode"], whereabouts["location"]
    render.row(out, "lost mode", Text(f"since {stamp(lost['since'])}: {lost['message']}", style="bold red"))
    where = "none kept" if fix is None else f"{fix['lat']:.6f}, {fix['lon']:.6f} (± {fix['accuracy_m']:.0f} m)"
    when = "" if fix is None else f", fixed {relative(fix['fixed_at'], now)}"
    render.row(out, "last known location", f"{where}{when} (this read is in the audit trail)")


@app.command(context_settings=CONTEXT)
def revoke(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device id.")],
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Revoke a device: its token stops working and its pending commands are cancelled at once; it can enroll
    again as a new generation that sees none of the old one's commands."""
    from core.devices import records as devices
    from core.enrollment import enroll as enrollment
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        devices.get_device(db, device_id)  # unknown device: fail before asking
    if not yes:
        confirm(
            f"Revoke device {device_id} on {st.masked_url}? Its token stops working and its pending commands "
            "are cancelled at once"
        )
    with st.session() as db:
        data = devices.device_dict(enrollment.revoke_device(db, device_id, actor=audit.cli_actor()), st.settings)
    if json_output:
        print_json(data)
        return
    note(f"[green]✅ device {escape(device_id)} revoked on {escape(st.masked_url)}[/green]")


@app.command(context_settings=CONTEXT)
def label(
    ctx: typer.Context,
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[ID] LABEL...", help="A device id (unless --selector), then key=value to set, key- to remove."
        ),
    ],
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Label every device this selector matches instead of one.")
    ] = None,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Set (key=value) and remove (key-) labels on one device, or on every device a selector matches."""
    from core.devices import labels as labels_module
    from core.devices import selectors
    from core.events import audit

    st = state(ctx)
    device_id = None
    if selector is None:
        if len(args) < 2:
            raise InvalidArgument("give a device id and at least one label (key=value or key-)", field="labels")
        device_id, args = args[0], args[1:]
    to_set, remove = labels_module.parse_label_args(args)
    if device_id is not None:
        with st.session() as db:
            labels = labels_module.label_device(db, device_id, to_set, remove, actor=audit.cli_actor())
        if json_output:
            print_json({"device_id": device_id, "labels": labels})
            return
        shown = ", ".join(f"{k}={v}" for k, v in labels.items()) or "no labels"
        note(f"[green]✅ {escape(device_id)}: {escape(shown)}[/green]")
        return
    parsed = selectors.parse(selector)
    with st.session() as db:
        matched = selectors.count_matching(db, parsed, st.settings)
    if matched > 1 and not yes:
        confirm(f"Change labels on {matched:,} devices matching {printable(repr(selector))} on {st.masked_url}?")
    with st.session() as db:
        ids = selectors.matching_ids(parsed, st.settings)
        matched = labels_module.label_selected(db, ids, to_set, remove, selector=parsed.text, actor=audit.cli_actor())
    if json_output:
        print_json({"selector": parsed.text, "matched": matched})
        return
    note(f"[green]✅ labels changed on {matched:,} devices matching {escape(repr(selector))}[/green]")


@app.command(context_settings=CONTEXT)
def labels(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Option("--key", help="Only this label key.")] = None,
    json_output: JsonOption = False,
) -> None:
    """How many devices carry each label key and value (revoked devices are not counted)."""
    from core.devices import labels as labels_module

    with state(ctx).session() as db:
        items = labels_module.label_counts(db, key=key)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No labels yet: `nexmdm devices label ID key=value`, or `nexmdm tokens create --label key=value`.")
        return
    out = table("Labels", "key", "value", "devices")
    for item in items:
        render.row(out, item["key"], item["value"] or '""', f"{item['devices']:,}")
    show(out)


@app.command("effective", context_settings=CONTEXT)
def effective_profile(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device id.")],
    json_output: JsonOption = False,
) -> None:
    """A device's effective profile: each key with the profile and version it came from, and what it
    overrides (docs/profiles.md)."""
    import json

    from core.base import validation
    from core.profiles import effective

    st = state(ctx)
    with st.session() as db:
        data = effective.view(db, st.settings, validation.device_id(device_id))
    if json_output:
        print_json(data)
        return
    if data["effective_hash"] is None:
        show(f"No profile matches {escape(device_id)}.")
        return
    out = table(f"{device_id}: effective profile {data['effective_hash'][:12]}", "key", "value", "from", "overrides")
    for key in data["keys"]:
        below = ", ".join(f"{o['profile']} v{o['version']}" for o in key["overrides"])
        value = json.dumps(key["value"], sort_keys=True, ensure_ascii=False)
        render.row(out, key["key"], value, f"{key['profile']} v{key['version']}", below or "—")
    show(out)
