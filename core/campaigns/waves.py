"""A campaign's waves and gates as asked: ``{size | percent, interval_seconds, min_success_pct,
max_failure_pct}`` checked into :class:`Waves` (``core.campaigns.records`` re-exports these names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.base.errors import InvalidArgument

#: the longest a campaign's command may wait for its ack, and the longest interval between waves
MAX_EXPIRES_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Waves:
    size: int | None = None
    percent: float | None = None
    interval_seconds: int = 0
    min_success_pct: float | None = None
    max_failure_pct: float | None = None


def percentage(value: Any, field: str, *, allow_zero: bool = True) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 100):
        raise InvalidArgument(f"{field} must be a percentage from 0 to 100", field=field)
    if not allow_zero and value == 0:
        raise InvalidArgument(f"{field} must be above 0 % (a wave of 0 % releases nothing)", field=field)
    return float(value)


def validate_waves(waves: dict[str, Any] | None) -> Waves:
    """``{size | percent, interval_seconds, min_success_pct, max_failure_pct}``; nonsense is refused."""
    if not waves:
        return Waves()
    unknown = set(waves) - {"size", "percent", "interval_seconds", "min_success_pct", "max_failure_pct"}
    if unknown:
        raise InvalidArgument(f"unknown wave option {sorted(unknown)[0]!r}", field="waves")
    size, percent = waves.get("size"), waves.get("percent")
    if (size is None) == (percent is None):
        raise InvalidArgument("waves need exactly one of size or percent", field="waves")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InvalidArgument("waves.size must be a whole number of devices, at least 1", field="waves.size")
    interval = waves.get("interval_seconds", 0) or 0
    if isinstance(interval, bool) or not isinstance(interval, int) or not (0 <= interval <= MAX_EXPIRES_SECONDS):
        raise InvalidArgument("waves.interval_seconds must be 0 to 30 days in seconds", field="waves.interval_seconds")
    return Waves(
        size=size,
        percent=percentage(percent, "waves.percent", allow_zero=False),
        interval_seconds=interval,
        min_success_pct=percentage(waves.get("min_success_pct"), "waves.min_success_pct"),
        max_failure_pct=percentage(waves.get("max_failure_pct"), "waves.max_failure_pct"),
    )
