"""The campaigns in flight in ``nexmdm top``: a progress bar and the counts of each, newest first.

On a wide terminal one table row per campaign with a column per status; on a narrower one two lines per
campaign (id, status, wave, bar; then the counts), so that nothing is squeezed into ellipses. The counts
are those of ``nexmdm campaigns show`` (``core.ops.fleet_stats.campaigns_in_flight``).
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from nexmdm_cli import render
from nexmdm_cli.render import printable, styled

#: the columns of counts (the order of ``nexmdm campaigns watch``): finished first, then what is left
COUNTS = ("acked", "failed", "expired", "cancelled", "pending", "queued")
#: at least this many columns: one table row per campaign
WIDE = 120
#: rows of the wide table besides its campaigns: title, borders, header and its rule
TABLE_FRAME = 5
#: rows of the narrow panel besides its campaigns (two lines each): borders
PANEL_FRAME = 2


def _finished(counts: dict[str, int]) -> int:
    return counts["acked"] + counts["failed"] + counts["expired"] + counts["cancelled"]


def _done(counts: dict[str, int], targeted: int) -> str:
    finished = _finished(counts)
    share = f"{100 * finished / targeted:.0f}%" if targeted else "—"
    return f"{finished:,}/{targeted:,} {share}"


def _status(c: dict[str, Any]) -> Text:
    return styled(c["status"]) + (f" ({printable(c['reason'])})" if c["reason"] else "")


def _bar(c: dict[str, Any], width: int | None = None) -> ProgressBar:
    return ProgressBar(total=max(c["targeted"], 1), completed=_finished(c["counts"]), width=width)


def _title(flight: dict[str, Any]) -> str:
    return f"Campaigns in flight: {flight['in_flight']:,}"


def _more(flight: dict[str, Any]) -> str | None:
    return f"+{flight['more']:,} more: nexmdm campaigns list" if flight["more"] else None


def _wide(flight: dict[str, Any]) -> Table:
    out = Table(title=_title(flight), title_justify="left", header_style="bold", expand=True)
    out.add_column("campaign", overflow="ellipsis", no_wrap=True, min_width=8)
    out.add_column("action", overflow="ellipsis", no_wrap=True)
    out.add_column("status", no_wrap=True)
    out.add_column("wave", justify="right", no_wrap=True)
    out.add_column("progress", no_wrap=True, min_width=6, ratio=1)
    out.add_column("done", justify="right", no_wrap=True)
    for name in COUNTS:
        out.add_column(styled(name), justify="right", no_wrap=True)
    for c in flight["items"]:
        render.row(
            out,
            c["id"],
            c["action"],
            _status(c),
            f"{c['waves']['released']}/{c['waves']['count']}",
            _bar(c),
            _done(c["counts"], c["targeted"]),
            *(f"{c['counts'][name]:,}" for name in COUNTS),
        )
    out.caption = _more(flight)
    return out


def _narrow(flight: dict[str, Any]) -> Panel:
    lines: list[RenderableType] = []
    for c in flight["items"]:
        first = Table.grid(padding=(0, 1), expand=True)
        first.add_column(overflow="ellipsis", no_wrap=True, ratio=2)
        first.add_column(no_wrap=True)
        first.add_column(no_wrap=True, justify="right")
        first.add_column(no_wrap=True, ratio=1, min_width=4)
        first.add_column(no_wrap=True, justify="right")
        render.row(
            first,
            c["id"],
            Text(f"{printable(c['action'])} · ") + _status(c),
            f"wave {c['waves']['released']}/{c['waves']['count']}",
            _bar(c),
            _done(c["counts"], c["targeted"]),
        )
        counts = " · ".join(f"{styled(name).markup} {c['counts'][name]:,}" for name in COUNTS)
        second = Text.from_markup("  " + counts, overflow="ellipsis")  # markup of fixed state names only
        second.no_wrap = True
        lines += [first, second]
    return Panel(
        Group(*lines),
        title=_title(flight),
        title_align="left",
        subtitle=_more(flight),
        subtitle_align="left",
        box=box.ROUNDED,
    )


def campaigns(snap: dict[str, Any], width: int) -> RenderableType | None:
    """The campaigns in flight for a terminal ``width`` columns wide; ``None`` when there are none."""
    flight = snap["campaigns"]
    if not flight["in_flight"]:
        return None
    return _wide(flight) if width >= WIDE else _narrow(flight)


def rows(snap: dict[str, Any], width: int) -> int:
    """Screen rows :func:`campaigns` takes (0 when no campaign is in flight)."""
    flight = snap["campaigns"]
    if not flight["in_flight"]:
        return 0
    if width >= WIDE:
        return TABLE_FRAME + len(flight["items"]) + (1 if flight["more"] else 0)
    return PANEL_FRAME + 2 * len(flight["items"])
