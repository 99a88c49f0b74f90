"""``core.base.durations``: parsing and formatting durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.base.durations import format_duration, parse_duration
from core.base.errors import InvalidArgument


@pytest.mark.parametrize(("text", "expected"), [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800)])
def test_durations(text: str, expected: int) -> None:
    assert parse_duration(text).total_seconds() == expected


@pytest.mark.parametrize("text", ["", "3x", "h", "-1h", "0m", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (5, 125, 3700, 90000)] == ["5s", "2m", "1h 1m", "1d 1h"]
