"""A device's heartbeats summed up per time slot, for the trend lines of ``nexmdm heartbeats show`` and the
presence strip of ``nexmdm devices show``.

The database does the grouping (one row per slot, read through the ``(device_id, bucket_start)``
primary key), so a week of 10-second beats is a few dozen rows, not 60,000.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from core.models import DeviceHeartbeat
from core.storage.dialect import is_postgresql


def _epoch(db: Session, column: Any) -> Any:
    if is_postgresql(db):
        return func.floor(func.extract("epoch", column))
    return cast(func.strftime("%s", column), Integer)


def slots(db: Session, device_id: str, *, since: datetime, until: datetime, count: int) -> list[dict[str, Any]]:
    """``count`` equal slots from ``since`` to ``until``, oldest first, each with ``start``, ``beats``,
    ``battery_pct`` (the slot's average, rounded; None without a reading) and ``network_type`` (one of
    the slot's network types, None without one)."""
    width = max((until - since).total_seconds() / count, 1.0)
    table = DeviceHeartbeat.__table__
    start = since.timestamp()
    slot = cast(func.floor((_epoch(db, table.c.bucket_start) - start) / width), Integer).label("slot")
    rows = db.execute(
        select(slot, func.count(), func.avg(table.c.battery_pct), func.max(table.c.network_type))
        .where(table.c.device_id == device_id, table.c.bucket_start >= since, table.c.bucket_start < until)
        .group_by(slot)
    ).all()
    by_slot = {int(index): (beats, battery, network) for index, beats, battery, network in rows}
    result = []
    for index in range(count):
        beats, battery, network = by_slot.get(index, (0, None, None))
        result.append(
            {
                "start": since + timedelta(seconds=index * width),
                "beats": int(beats),
                "battery_pct": None if battery is None else round(float(battery)),
                "network_type": network,
            }
        )
    return result
