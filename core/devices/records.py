"""Devices as records: look one up, authenticate its token, its recent heartbeats and activity.

The fleet view (``device_dict``, ``device_state``, ``list_devices``) is defined in :mod:`core.devices.listing`
and re-exported here; enrolling and revoking a device is :mod:`core.enrollment.enroll`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.base import security
from core.base.errors import InvalidCredentials, NotFound
from core.devices.listing import device_dict as device_dict  # the fleet view, re-exported (one definition there)
from core.devices.listing import device_state as device_state
from core.devices.listing import list_devices as list_devices
from core.models import Device, DeviceHeartbeat, FcmDispatch


def get_device(db: Session, device_id: str) -> Device:
    device = db.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    return device


def authenticate_device(db: Session, secret: str) -> Device:
    device = db.execute(
        select(Device).where(Device.device_token_hash == security.hash_secret(secret))
    ).scalar_one_or_none()
    if device is None or device.revoked_at is not None or not security.matches(secret, device.device_token_hash):
        raise InvalidCredentials("invalid device token")
    return device


#: the last-seen summary that heartbeats keep; a new generation starts without it (and is asked for its
#: inventory again: the held one stays readable until the new generation reports)
SUMMARY_FIELDS = (
    "last_seen_at",
    "last_status",
    "last_battery_pct",
    "last_plugged",
    "last_network_type",
    "inventory_hash",
    "inventory_seen_at",
)


def recent_heartbeats(
    db: Session,
    device_id: str,
    *,
    since: datetime | None = None,
    limit: int = 50,
    before: datetime | None = None,
) -> list[dict[str, Any]]:
    """A device's heartbeats, newest first (keyset: ``before`` is the last bucket of the previous page)."""
    table = DeviceHeartbeat.__table__
    query = select(table).where(table.c.device_id == device_id)
    if since is not None:
        query = query.where(table.c.bucket_start >= since)
    if before is not None:
        query = query.where(table.c.bucket_start < before)
    query = query.order_by(table.c.bucket_start.desc()).limit(limit)
    return [dict(row) for row in db.execute(query).mappings()]


def device_activity(db: Session, device_id: str) -> dict[str, int]:
    """How many heartbeats a device has stored and how many of its commands are still pending."""
    heartbeats = db.scalar(
        select(func.count()).select_from(DeviceHeartbeat).where(DeviceHeartbeat.device_id == device_id)
    )
    pending = db.scalar(
        select(func.count())
        .select_from(FcmDispatch)
        .join(Device, Device.id == FcmDispatch.device_id)
        .where(
            FcmDispatch.device_id == device_id,
            FcmDispatch.status == "pending",
            FcmDispatch.generation == Device.generation,
        )
    )
    return {"heartbeats_stored": int(heartbeats or 0), "pending_commands": int(pending or 0)}
