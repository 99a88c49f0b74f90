"""Where a device is, and lost mode: personal data, read by operators and admins only, every read audited.

Fixes arrive as the result of a ``locate`` (or ``lost_mode``) ack, or as periodic reports of a device in
lost mode (``POST /v1/location``). They are kept ``NEXMDM_LOCATION_RETENTION_DAYS`` (7) after receipt
(``cleanup_old_device_locations``, in the retention registry). Lost mode is one row per device in
``device_lost_mode``, for the device's current enrollment generation (selector ``@lost=true``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from core.base.errors import Conflict, InvalidArgument
from core.devices.records import get_device
from core.events.audit import Actor, record
from core.models import Device, DeviceLocation, DeviceLostMode
from core.storage.batched_delete import batched_cleanup
from core.storage.dialect import insert_for
from core.storage.types import utcnow

_LOCATIONS: Table = DeviceLocation.__table__  # type: ignore[assignment]
_LOST: Table = DeviceLostMode.__table__  # type: ignore[assignment]
#: a device's clock may run a little ahead; a fix further in the future than this is refused
CLOCK_SKEW = timedelta(minutes=5)
MAX_PAGE = 500


class NotInLostMode(Conflict):
    """A periodic location report from a device that is not in lost mode (only ``locate`` may locate it then)."""

    code = "not_in_lost_mode"


def _fixed_at(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidArgument("fixed_at must be an RFC 3339 date-time", field="fixed_at")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"fixed_at {value!r} is not an RFC 3339 date-time", field="fixed_at") from None
    if at.tzinfo is None:
        raise InvalidArgument("fixed_at needs a time zone (Z or ±hh:mm)", field="fixed_at")
    if at > utcnow() + CLOCK_SKEW:
        raise InvalidArgument("fixed_at is in the future", field="fixed_at")
    return at


def check_fix(fix: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid fix (``action_schemas.LOCATION``) as a row's values; raises on a time in the future."""
    return {
        "lat": float(fix["lat"]),
        "lon": float(fix["lon"]),
        "accuracy_m": float(fix["accuracy_m"]),
        "fixed_at": _fixed_at(fix["fixed_at"]),
    }


def record_fix(
    db: Session, *, device_id: str, fix: dict[str, Any], source: str, request_id: str | None = None
) -> dict[str, Any]:
    """Store one fix (already checked with :func:`check_fix`) in the caller's transaction."""
    values = {**fix, "device_id": device_id, "source": source, "request_id": request_id, "received_at": utcnow()}
    db.execute(insert(_LOCATIONS).values(**values))
    return values


def start_lost_mode(db: Session, *, device_id: str, message: str, phone: str | None, request_id: str) -> None:
    """Put the device in lost mode (again: the newer message wins), for its current generation."""
    generation = select(Device.generation).where(Device.id == device_id).scalar_subquery()
    values = {
        "device_id": device_id,
        "generation": generation,
        "since": utcnow(),
        "message": message,
        "phone": phone,
        "request_id": request_id,
    }
    statement = insert_for(db, _LOST).values(**values)
    db.execute(
        statement.on_conflict_do_update(
            index_elements=[_LOST.c.device_id],
            set_={k: statement.excluded[k] for k in ("generation", "since", "message", "phone", "request_id")},
        )
    )


def end_lost_mode(db: Session, device_id: str) -> None:
    db.execute(delete(_LOST).where(_LOST.c.device_id == device_id))


def lost_mode_of(db: Session, device_id: str) -> dict[str, Any] | None:
    """The device's lost mode (since, message, phone), or None: not set for its current generation."""
    row = (
        db.execute(
            select(_LOST.c.since, _LOST.c.message, _LOST.c.phone, _LOST.c.request_id)
            .join(Device, Device.id == _LOST.c.device_id)
            .where(_LOST.c.device_id == device_id, _LOST.c.generation == Device.generation)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def report_location(db: Session, *, device_id: str, fix: dict[str, Any]) -> dict[str, Any]:
    """A periodic fix from a device in lost mode (``POST /v1/location``); otherwise :class:`NotInLostMode`."""
    values = check_fix(fix)
    if lost_mode_of(db, device_id) is None:
        raise NotInLostMode("this device is not in lost mode: it reports its location only as a locate result")
    return public_location(record_fix(db, device_id=device_id, fix=values, source="lost_mode"))


def public_location(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in ("lat", "lon", "accuracy_m", "fixed_at", "received_at", "source", "request_id")}


_COLUMNS = (
    _LOCATIONS.c.id,
    _LOCATIONS.c.lat,
    _LOCATIONS.c.lon,
    _LOCATIONS.c.accuracy_m,
    _LOCATIONS.c.fixed_at,
    _LOCATIONS.c.received_at,
    _LOCATIONS.c.source,
    _LOCATIONS.c.request_id,
)


def last_location(db: Session, device_id: str, *, actor: Actor | None) -> dict[str, Any]:
    """The device's last known location (None when none is kept) and its lost mode; the read is audited.

    ``{"device_id", "location": {...} | None, "lost_mode": {...} | None}``: what ``devices show`` prints.
    """
    get_device(db, device_id)
    row = (
        db.execute(
            select(*_COLUMNS)
            .where(_LOCATIONS.c.device_id == device_id)
            .order_by(_LOCATIONS.c.fixed_at.desc(), _LOCATIONS.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    record(db, actor, "location.read", device_id, what="last", found=row is not None)
    return {
        "device_id": device_id,
        "location": public_location(row) if row is not None else None,
        "lost_mode": lost_mode_of(db, device_id),
    }


def list_locations(
    db: Session, device_id: str, *, actor: Actor | None, limit: int = 100, before_id: int | None = None
) -> list[dict[str, Any]]:
    """The device's kept fixes, newest received first (keyset on ``id``); the read is audited."""
    if not 1 <= limit <= MAX_PAGE + 1:
        raise InvalidArgument(f"limit must be 1-{MAX_PAGE}", field="limit")
    get_device(db, device_id)
    query = select(*_COLUMNS).where(_LOCATIONS.c.device_id == device_id).order_by(_LOCATIONS.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(_LOCATIONS.c.id < before_id)
    rows = [public_location(r) | {"id": r["id"]} for r in db.execute(query).mappings()]
    record(db, actor, "location.read", device_id, what="history", count=len(rows))
    return rows


def cleanup_old_device_locations(
    db: Session, *, retention_days: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete fixes received before the cutoff (``NEXMDM_LOCATION_RETENTION_DAYS``, default 7)."""
    return batched_cleanup(
        db,
        entity="device_locations",
        table=_LOCATIONS,
        keys=(_LOCATIONS.c.received_at, _LOCATIONS.c.id),
        condition=lambda cutoff: _LOCATIONS.c.received_at < cutoff,
        retention_days=retention_days,
        dry_run=dry_run,
    )
