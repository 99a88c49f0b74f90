"""A device's inventory in the terminal (``nexmdm devices show``): its reported fields, recent app changes
and, with ``--apps``, its apps. Reads ``core.inventory`` inside the functions, so ``--help`` stays fast."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text

from nexmdm_cli import render
from nexmdm_cli.render import dash, relative, show, stamp, table, yes_no

#: app changes shown by ``devices show``
RECENT_CHANGES = 10
_CHANGE_STYLES = {"installed": "green", "updated": "cyan", "downgraded": "yellow", "removed": "red"}
_LABELS = {
    "manufacturer": "manufacturer",
    "model": "model",
    "os_version": "OS version",
    "api_level": "API level",
    "security_patch": "security patch",
    "build_fingerprint": "build",
    "storage_total_mb": "storage (MB)",
    "storage_free_mb": "storage free (MB)",
    "ram_mb": "RAM (MB)",
    "agent_version": "agent version",
    "serial": "serial",
}


def read(db: Any, device_id: str, *, with_apps: bool) -> dict[str, Any]:
    """``{"inventory": {...} | None, "app_changes": [...], "apps"?: [...]}`` for one device."""
    from core.base.errors import NotFound
    from core.inventory import reads
    from core.inventory.document import MAX_APPS

    try:
        inventory: dict[str, Any] | None = reads.device_inventory(db, device_id)
    except NotFound:
        inventory = None
    out: dict[str, Any] = {
        "inventory": inventory,
        "app_changes": reads.app_changes(db, device_id, limit=RECENT_CHANGES),
    }
    if with_apps:
        out["apps"] = reads.device_apps(db, device_id, limit=MAX_APPS)
    return out


def render_inventory(data: dict[str, Any], now: datetime) -> None:
    inventory = data["inventory"]
    if inventory is None:
        show("Inventory: none reported yet.")
    else:
        out = table("Inventory", "field", "value")
        for name, label in _LABELS.items():
            if name in inventory["device"]:
                render.row(out, label, str(inventory["device"][name]))
        render.row(out, "apps", f"{inventory['app_count']:,}")
        reported = inventory["updated_at"]
        render.row(out, "reported", f"{relative(reported, now)} ({stamp(reported)})")
        show(out)
    if data["app_changes"]:
        changes = table(f"Recent app changes (last {RECENT_CHANGES})", "when", "package", "change", "from", "to")
        for change in data["app_changes"]:
            render.row(
                changes,
                relative(change["at"], now),
                change["package"],
                Text(change["change"], style=_CHANGE_STYLES.get(change["change"], "")),
                dash(change["from_version_code"]),
                dash(change["to_version_code"]),
            )
        show(changes)
    if "apps" in data:
        apps = table(f"Apps ({len(data['apps'])})", "package", "version code", "version name", "system", "enabled")
        for item in data["apps"]:
            render.row(
                apps,
                item["package"],
                str(item["version_code"]),
                dash(item["version_name"]),
                yes_no(item["system"]),
                yes_no(item["enabled"]),
            )
        show(apps)
