"""The current time, timezone-aware UTC (no SQLAlchemy here: the CLI imports it to start)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
