"""Retention of the app-change history (``NEXMDM_APP_CHANGE_RETENTION_DAYS``, 90), run by ``nexmdm cleanup``
with the others (registered in ``core.ops.retention``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from core.models import DeviceAppChange
from core.storage.batched_delete import batched_cleanup

_CHANGES: Table = DeviceAppChange.__table__  # type: ignore[assignment]


def cleanup_old_app_changes(db: Session, *, retention_days: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete app changes recorded before the cutoff."""
    return batched_cleanup(
        db,
        entity="device_app_changes",
        table=_CHANGES,
        keys=(_CHANGES.c.at, _CHANGES.c.id),
        condition=lambda cutoff: _CHANGES.c.at < cutoff,
        retention_days=retention_days,
        dry_run=dry_run,
    )
