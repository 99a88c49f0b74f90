"""Durations as operators type them: ``90s``, ``15m``, ``24h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

from core.base.errors import InvalidArgument

_DURATION_RE = re.compile(r"\s*(\d+)\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    match = _DURATION_RE.fullmatch(text or "")
    if not match or int(match.group(1)) == 0:
        raise InvalidArgument(
            f"{field} must be a positive number followed by s, m, h, d or w (like 30m, 24h, 7d); got {text!r}",
            field=field,
        )
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise InvalidArgument(f"{field} {text!r} is too long", field=field) from None


def format_duration(delta: timedelta) -> str:
    """Compact human form: ``45s``, ``12m``, ``3h 5m``, ``2d 4h``."""
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
