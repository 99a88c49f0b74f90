"""What ``nexmdm top`` draws: the fleet snapshot (``core.ops.fleet_stats.snapshot``) as rich renderables.

One function builds the panels; the live screen arranges them to fit the terminal (four side by side
when it is wide, two by two, or stacked), the campaigns in flight follow (a progress bar each, when
there are any), and the list of devices that went offline gets the rows left.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from core.ops.fleet_stats import DEVICE_STATES
from nexmdm_cli import render, top_campaigns
from nexmdm_cli.render import ms, printable, relative, styled

#: rows a panel takes (border, title and its longest body)
PANEL_ROWS = 9
WIDE = 120
MEDIUM = 64


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def _grid() -> Table:
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(no_wrap=True, min_width=11)
    grid.add_column(justify="right", no_wrap=True, min_width=7)
    grid.add_column(justify="right", no_wrap=True, overflow="ellipsis", style="dim")
    return grid


def _age(seconds: float | None) -> str:
    if not seconds:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def fleet_panel(snap: dict[str, Any]) -> Panel:
    counts = snap["devices"]
    grid = _grid()
    enrolled = counts["total"] - counts["revoked"]
    for state in DEVICE_STATES:
        share = _pct(counts[state], enrolled) if state != "revoked" else ""
        render.row(grid, styled(state), f"{counts[state]:,}", share)
    render.row(grid, "total", f"{counts['total']:,}", "")
    inventory = snap.get("inventory_stale")
    if inventory is not None:  # devices whose inventory is not known current (docs/device-protocol.md)
        render.row(grid, Text("inventory > 1d", style="yellow"), f"{inventory['older_than_a_day']:,}", "")
        render.row(grid, Text("inventory never", style="dim"), f"{inventory['never']:,}", "")
    return Panel(grid, title="Fleet", title_align="left")


def heartbeat_panel(snap: dict[str, Any]) -> Panel:
    beats = snap["heartbeats"]
    grid = _grid()
    render.row(grid, "per second", f"{beats['per_second']:,.1f}", "1m")
    render.row(grid, "stored", f"{beats['stored']:,}", "1m")
    dedup = beats.get("dedup")
    if dedup is not None:
        share = "—" if dedup["share"] is None else f"{100 * dedup['share']:.1f}%"
        render.row(grid, "dedup share", share, dedup["window"])
        if snap.get("selector") is not None:  # the servers' counters: a selector cannot narrow them
            render.row(grid, Text("all devices", style="dim"), "", "")
    return Panel(grid, title="Heartbeats", title_align="left")


def commands_panel(snap: dict[str, Any]) -> Panel:
    commands = snap["commands"]
    grid = _grid()
    render.row(grid, "pending now", f"{commands['pending']:,}", "all")
    for status, count in commands["last_hour"].items():
        render.row(grid, styled(status), f"{count:,}", "1h")
    return Panel(grid, title=_fleet_wide("Commands", snap), title_align="left")


def push_panel(snap: dict[str, Any]) -> Panel:
    queue = snap["push_queue"]
    latency = snap["latency"]
    grid = _grid()
    render.row(grid, "push queue", f"{queue['depth']:,}", "commands")
    render.row(grid, "oldest", _age(queue["oldest_age_seconds"]), "waiting")
    render.row(grid, "push p50", ms(latency["push_latency_ms"]["p50"]), "1h")
    render.row(grid, "push p99", ms(latency["push_latency_ms"]["p99"]), "1h")
    render.row(grid, "ack p50", ms(latency["ack_latency_ms"]["p50"]), "1h")
    render.row(grid, "ack p99", ms(latency["ack_latency_ms"]["p99"]), "1h")
    return Panel(grid, title=_fleet_wide("Push and ack", snap), title_align="left")


def _fleet_wide(title: str, snap: dict[str, Any]) -> str:
    """With a selector, a panel that it does not narrow says so."""
    return title if snap.get("selector") is None else f"{title} · all devices"


def offline_table(snap: dict[str, Any], rows: int | None = None) -> Table:
    went = snap["went_offline"]
    now: datetime = snap["at"]
    out = Table(
        title=f"Went offline in the last hour: {went['count']:,}",
        title_justify="left",
        header_style="bold",
        expand=True,
    )
    out.add_column("device", overflow="ellipsis", no_wrap=True)
    out.add_column("last seen", no_wrap=True)
    out.add_column("offline since", no_wrap=True)
    items = went["items"] if rows is None else went["items"][: max(rows, 0)]
    for item in items:
        render.row(out, item["device_id"], relative(item["last_seen_at"], now), relative(item["offline_since"], now))
    shown = len(items)
    if went["count"] > shown:
        out.caption = f"{shown} of {went['count']:,} shown"
    return out


def compliance(snap: dict[str, Any]) -> Text:
    """One line: the unrevoked devices (matching the selector) by profile compliance, as ``nexmdm
    compliance`` counts them (the gauge's function)."""
    return Text.assemble(("Compliance ", "bold"), render.compliance_line(snap["compliance"]))


def header(snap: dict[str, Any], source: str, note: str | None = None, *, interval: float | None = None) -> Text:
    """One line; the database URL comes last, so a narrow terminal cuts it rather than the keys."""
    text = Text.assemble(("NexMDM top", "bold"))
    if snap.get("selector") is not None:
        text.append(" · selector ")
        text.append(printable(snap["selector"] or "all"), style="bold cyan")
    text.append(f" · {snap['at'].strftime('%H:%M:%S')} UTC")
    if interval is not None:
        text.append(f" · every {interval:g}s · q quits")
    if note:
        text.append(f" · {note}", style="yellow")
    text.append(f" · queries {snap['query_ms']:.0f} ms · {source}")
    return text


def panels(snap: dict[str, Any]) -> list[Panel]:
    return [fleet_panel(snap), heartbeat_panel(snap), commands_panel(snap), push_panel(snap)]


def once(snap: dict[str, Any], source: str, width: int, note: str | None = None) -> RenderableType:
    """The one-shot view (``--once``): every panel, then the whole went-offline list."""
    parts = panels(snap)
    per_row = 4 if width >= WIDE else 2 if width >= MEDIUM else 1
    grid = Table.grid(padding=(0, 1), expand=True)
    for _ in range(per_row):
        grid.add_column(ratio=1)
    for start in range(0, len(parts), per_row):
        render.row(grid, *parts[start : start + per_row])
    campaigns = top_campaigns.campaigns(snap, width)
    middle = [campaigns] if campaigns is not None else []
    return Group(header(snap, source, note), grid, compliance(snap), *middle, offline_table(snap))


def panel_rows(width: int) -> int:
    """Screen rows the panels take at this width."""
    if width >= WIDE:
        return PANEL_ROWS
    if width >= MEDIUM:
        return 2 * PANEL_ROWS
    return 4 * PANEL_ROWS


def offline_rows(width: int, height: int) -> int:
    """How many went-offline devices fit below the panels and the compliance line (title, header, borders
    and caption take 6)."""
    return max(height - 1 - panel_rows(width) - 1 - 6, 0)


def screen(snap: dict[str, Any], source: str, width: int, height: int, *, interval: float, note: str | None) -> Layout:
    """The live screen for a terminal of ``width`` × ``height``."""
    parts = panels(snap)
    top = Layout(name="panels", size=min(panel_rows(width), max(height - 1, 1)))
    if width >= WIDE:
        top.split_row(*(Layout(p) for p in parts))
    elif width >= MEDIUM:
        upper, lower = Layout(), Layout()
        top.split_column(upper, lower)
        upper.split_row(Layout(parts[0]), Layout(parts[1]))
        lower.split_row(Layout(parts[2]), Layout(parts[3]))
    else:
        top.split_column(*(Layout(p) for p in parts))
    parts_below: list[Layout] = []
    campaigns = top_campaigns.campaigns(snap, width)
    taken = 0
    if campaigns is not None:
        taken = min(top_campaigns.rows(snap, width), max(height - 2 - panel_rows(width), 0))
        parts_below.append(Layout(campaigns, name="campaigns", size=taken))
    root = Layout()
    root.split_column(
        Layout(header(snap, source, note, interval=interval), size=1),
        top,
        Layout(compliance(snap), name="compliance", size=1),
        *parts_below,
        Layout(offline_table(snap, max(offline_rows(width, height) - taken, 0))),
    )
    return root
