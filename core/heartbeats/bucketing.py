"""The seed's ``record_heartbeat_with_bucketing``: at most one heartbeat per device per bucket of receive time."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, bindparam, cast, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import Conflict, InvalidArgument, NotFound
from core.heartbeats import partitions
from core.heartbeats.validate import STORED_FIELDS, validate_heartbeat_data
from core.models import Device, DeviceHeartbeat
from core.storage.dialect import bind_params, insert_for, name_of
from core.storage.operations import log_operation, session_settings
from core.storage.types import utcnow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEARTBEATS: Table = DeviceHeartbeat.__table__  # type: ignore[assignment]
_DEVICES: Table = Device.__table__  # core.storage.tables.devices (mapped there, so already a Table to mypy)
_COLUMNS = ("device_id", "bucket_start", "received_at", *STORED_FIELDS)


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    """Built once per dialect with bind parameters (a reused statement also hits the compiled cache)."""
    return {
        # heartbeats carry no foreign key (partitions are dropped without locking devices): the
        # statement itself stores a beat only for a device that exists
        "heartbeat": insert_for(dialect, _HEARTBEATS)
        .from_select(
            _COLUMNS,
            # PostgreSQL types a bare NULL in a select list as text: cast every parameter to its column
            select(
                *(
                    cast(p, p.type) if dialect == "postgresql" else p
                    for p in bind_params(_HEARTBEATS, *_COLUMNS).values()
                )
            ).where(select(_DEVICES.c.id).where(_DEVICES.c.id == bindparam("device_id")).exists()),
        )
        .on_conflict_do_nothing(index_elements=[_HEARTBEATS.c.device_id, _HEARTBEATS.c.bucket_start])
        # only whether it was stored: the stored row is what was bound (see record_heartbeat_with_bucketing)
        .returning(_HEARTBEATS.c.device_id),
        "device_exists": select(_DEVICES.c.id).where(_DEVICES.c.id == bindparam("device_id")),
        "heartbeat_existing": select(_HEARTBEATS).where(
            _HEARTBEATS.c.device_id == bindparam("device_id"), _HEARTBEATS.c.bucket_start == bindparam("bucket_start")
        ),
    }


def _statement(db: Session, name: str) -> Any:
    return _statements(name_of(db))[name]


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{field} must be a timezone-aware datetime", field=field)
    return value.astimezone(UTC)


def bucket_floor(moment: datetime, bucket_seconds: int) -> datetime:
    """Floor an aware datetime to its bucket, in exact integer microseconds (no float rounding)."""
    micros = (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    size = bucket_seconds * 1_000_000
    return _EPOCH + timedelta(microseconds=micros - micros % size)


def record_heartbeat_with_bucketing(
    db: Session,
    *,
    device_id: str,
    heartbeat_data: Mapping[str, Any],
    bucket_seconds: int = 10,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """Store at most one heartbeat per device per ``bucket_seconds`` bucket of server receive time.

    Returns ``{"created": bool, "bucket_start": datetime, "heartbeat": {...}}``; on a dedup hit the
    heartbeat is the row already stored for that bucket.
    """
    started = time.perf_counter()
    validation.device_id(device_id)
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int) or bucket_seconds < 1:
        raise InvalidArgument("bucket_seconds must be a positive integer", field="bucket_seconds")
    fields = validate_heartbeat_data(heartbeat_data)
    received = utcnow() if received_at is None else _aware(received_at, "received_at")
    bucket_start = bucket_floor(received, bucket_seconds)
    partitions.ensure_for(db, bucket_start)

    key = {"device_id": device_id, "bucket_start": bucket_start}
    stored: dict[str, Any] = key | {"received_at": received, **fields}  # in the columns' order, as a row
    try:
        created = db.execute(_statement(db, "heartbeat"), stored).first() is not None
    except IntegrityError as exc:
        bind = db.get_bind()
        partitions.forget_if_missing(exc, bind if isinstance(bind, Engine) else bind.engine)
        raise
    # a new row is exactly what was bound (validated values, aware UTC times): returning every column
    # cost ~10 % of a call's CPU in result processing for values this function already holds
    heartbeat = stored
    if not created:  # a duplicate (read the row already stored for this bucket), or no such device
        row = db.execute(_statement(db, "heartbeat_existing"), key).mappings().first()
        if row is None:
            if db.execute(_statement(db, "device_exists"), key).first() is None:
                raise NotFound(f"device {device_id!r} does not exist")
            # the bucket's row went between the two statements (a cleanup of a backfilled old bucket)
            raise Conflict(f"the heartbeat bucket {bucket_start.isoformat()} changed meanwhile; send it again")
        heartbeat = dict(row)
    threshold = session_settings(db).slow_heartbeat_ms
    latency_ms = (time.perf_counter() - started) * 1000
    log_operation(
        "create" if created else "dedup_hit",
        "device_heartbeats",
        {"device_id": device_id},
        started,
        level=logging.WARNING if latency_ms > threshold else logging.INFO,
    )
    return {"created": created, "bucket_start": bucket_start, "heartbeat": heartbeat}
