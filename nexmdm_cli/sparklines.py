"""Trend lines drawn with text: a battery sparkline, a network line and a presence strip.

Each character is one time slot (``core.heartbeats.trends.slots``), oldest on the left; a blank is a slot without
a heartbeat, so gaps show where they were.
"""

from __future__ import annotations

from typing import Any

BARS = "▁▂▃▄▅▆▇█"
#: one letter per network type; upper case would shout, these read as a timeline
NETWORK_LETTERS = {
    "wifi": "w",
    "cellular": "c",
    "ethernet": "e",
    "vpn": "v",
    "bluetooth": "b",
    "none": "n",
    "unknown": "?",
}
HEARD, SILENT = "█", "·"


def battery(slots: list[dict[str, Any]]) -> str:
    """0-100 % on eight levels; a blank where no beat carried a battery level."""
    return "".join(
        " " if s["battery_pct"] is None else BARS[min(len(BARS) - 1, s["battery_pct"] * len(BARS) // 101)]
        for s in slots
    )


def network(slots: list[dict[str, Any]]) -> str:
    return "".join(" " if s["network_type"] is None else NETWORK_LETTERS.get(s["network_type"], "?") for s in slots)


def network_legend(slots: list[dict[str, Any]]) -> str:
    seen = sorted({s["network_type"] for s in slots if s["network_type"]})
    return " · ".join(f"{NETWORK_LETTERS.get(name, '?')} {name}" for name in seen)


def presence(slots: list[dict[str, Any]]) -> str:
    """``█`` for a slot with at least one heartbeat, ``·`` for a silent one."""
    return "".join(HEARD if s["beats"] else SILENT for s in slots)
