"""``nexmdm devices location ID``: a device's last known location (or its kept fixes) and lost mode.

Locations are personal data: every read leaves a ``location.read`` audit row. Registered on the
``devices`` group by ``nexmdm_cli.commands``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group

from core.base.clock import utcnow
from nexmdm_cli import render
from nexmdm_cli.render import JsonOption, dash, note, relative, show, stamp, table
from nexmdm_cli.state import print_json, state


def _where(fix: dict[str, Any]) -> str:
    return f"{fix['lat']:.6f}, {fix['lon']:.6f} (± {fix['accuracy_m']:.0f} m)"


def location(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The device's id.")],
    history: Annotated[bool, typer.Option("--history", help="Every kept fix, newest first.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500, help="With --history: at most this many fixes.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """A device's last known location and whether it is in lost mode (--history: every kept fix).

    Locations are personal data: each read is recorded in the audit trail (location.read).
    """
    from core.devices import locations
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        if history:
            items = locations.list_locations(db, device_id, actor=audit.cli_actor(), limit=limit)
        else:
            data = locations.last_location(db, device_id, actor=audit.cli_actor())
    if history:
        _show_history(device_id, items, json_output)
        return
    if json_output:
        print_json(data)
        return
    now = utcnow()
    out = table(f"Location of {device_id}", "field", "value")
    fix = data["location"]
    if fix is None:
        render.row(out, "last known", "none kept")
    else:
        render.row(out, "last known", _where(fix))
        render.row(out, "fixed", f"{stamp(fix['fixed_at'])} ({relative(fix['fixed_at'], now)})")
        render.row(out, "from", f"{fix['source']} {dash(fix['request_id'])}")
    lost = data["lost_mode"]
    render.row(out, "lost mode", "no" if lost is None else f"since {stamp(lost['since'])}")
    if lost is not None:
        render.row(out, "lost-mode message", lost["message"])
        render.row(out, "lost-mode phone", dash(lost["phone"]))
    show(out)
    note("this read is recorded in the audit trail (location.read)")


def _show_history(device_id: str, items: list[dict[str, Any]], json_output: bool) -> None:
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show(f"No location of {device_id} is kept.")
        return
    out = table(f"Locations of {device_id} (newest first)", "fixed (UTC)", "where", "source", "request")
    for fix in items:
        render.row(out, stamp(fix["fixed_at"]), _where(fix), fix["source"], dash(fix["request_id"]))
    show(Group(out))
    note("this read is recorded in the audit trail (location.read)")
