"""The selector terms on what a device is now, compiled to SQL (parsed in ``core.devices.selectors``).

``@state`` reads ``last_seen_at`` against the online/offline thresholds of the settings; ``@lost`` probes
``device_lost_mode`` for the device's current enrollment (``core.devices.locations``): never null, a device is
in lost mode or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true

from core.base.settings import Settings
from core.models import Device, DeviceLostMode

STATES = ("online", "stale", "offline")
NEGATIVE = ("!=", "notin")


def _state(state: str, settings: Settings, now: datetime) -> ColumnElement[bool]:
    online = now - timedelta(seconds=settings.device_online_seconds)
    offline = now - timedelta(seconds=settings.device_offline_seconds)
    seen = Device.last_seen_at
    if state == "online":
        return seen >= online
    if state == "stale":
        return and_(seen < online, seen >= offline)
    return or_(seen.is_(None), seen < offline)


def state_clause(op: str, values: Iterable[str], settings: Settings, now: datetime) -> ColumnElement[bool]:
    wanted = set(values)
    if op in NEGATIVE:
        wanted = set(STATES) - wanted
    return or_(*(_state(s, settings, now) for s in STATES if s in wanted)) if wanted else false()


def lost_clause(op: str, values: Iterable[str]) -> ColumnElement[bool]:
    wanted = {v == "true" for v in values}
    if op in NEGATIVE:
        wanted = {True, False} - wanted
    if wanted == {True, False}:
        return true()
    if not wanted:
        return false()
    lost = exists(
        select(DeviceLostMode.device_id).where(
            DeviceLostMode.device_id == Device.id, DeviceLostMode.generation == Device.generation
        )
    )
    return lost if True in wanted else ~lost
