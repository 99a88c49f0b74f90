"""Persistence helpers: the seed's API (see ``shared/CONTRACT.md``, "Persistence helpers").

Each takes a SQLAlchemy ``Session`` first, returns a plain dict and logs one ``db_operation`` line on
the ``nexmdm.db`` logger. Idempotency and deduplication are one ``INSERT ... ON CONFLICT`` statement
against the table's unique key on both databases: no select-then-insert races. The helpers never
commit; the caller owns the transaction. The one exception is a real (not dry) retention cleanup, which
commits after every bounded batch so that it never holds a long lock; the cleanups live in
``core.retention`` and are re-exported here (the seed's import path).

When a helper raises :class:`core.errors.NotFound` for an unknown device or build, the database has
refused the row (a foreign key); on PostgreSQL the caller's transaction must then be rolled back.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import partitions, validation
from core.errors import Conflict, InvalidArgument, NexMDMError, NotFound, from_database_error
from core.models import (
    DOWNLOAD_SOURCES,
    FCM_STATUSES,
    NETWORK_TYPES,
    ApkDownloadEvent,
    Device,
    DeviceHeartbeat,
    FcmDispatch,
)
from core.operations import log_operation, logger, session_settings
from core.retention import (
    CLEANUP_ENTITIES,
    cleanup_old_apk_download_events,
    cleanup_old_fcm_dispatches,
    cleanup_old_heartbeats,
    run_all_retention_cleanups,
)
from core.types import utcnow

__all__ = [
    "CLEANUP_ENTITIES",
    "bucket_floor",
    "cleanup_old_apk_download_events",
    "cleanup_old_fcm_dispatches",
    "cleanup_old_heartbeats",
    "log_operation",
    "logger",
    "record_apk_download",
    "record_fcm_dispatch",
    "record_heartbeat_with_bucketing",
    "run_all_retention_cleanups",
    "session_settings",
    "validate_heartbeat_data",
]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DISPATCHES: Table = FcmDispatch.__table__  # type: ignore[assignment]
_HEARTBEATS: Table = DeviceHeartbeat.__table__  # type: ignore[assignment]
_DEVICES: Table = Device.__table__  # core.tables.devices (mapped there, so already a Table to mypy)
_DOWNLOADS: Table = ApkDownloadEvent.__table__  # type: ignore[assignment]


# --------------------------------------------------------------------------------------- plumbing


def _params(table: Table, *names: str) -> dict[str, Any]:
    return {name: bindparam(name, type_=table.c[name].type) for name in names}


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    """The helpers' statements, built once per dialect with bind parameters.

    Building an ``insert().values(...)`` per call costs more Python time than the round trip it sends;
    a statement object reused with parameters also hits SQLAlchemy's compiled cache at once.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    dispatch_columns = ("request_id", "device_id", "action", "payload", "payload_hash", "fcm_status", "created_at")
    heartbeat_columns = (
        "device_id",
        "bucket_start",
        "received_at",
        "status",
        "battery_pct",
        "plugged",
        "network_type",
        "agent_version",
    )
    return {
        # A fresh row has replay_count 0; every conflict increments it, so 0 in RETURNING means "inserted".
        "dispatch": insert(_DISPATCHES)
        .values(
            status="pending",
            replay_count=0,
            attempts=0,
            # stamped from the device: a command belongs to the enrollment generation it was made for
            generation=func.coalesce(
                select(_DEVICES.c.generation).where(_DEVICES.c.id == bindparam("device_id")).scalar_subquery(), 1
            ),
            **_params(_DISPATCHES, *dispatch_columns),
        )
        .on_conflict_do_update(
            index_elements=[_DISPATCHES.c.request_id],
            set_={
                "replay_count": _DISPATCHES.c.replay_count + 1,
                "last_replayed_at": bindparam("created_at", type_=_DISPATCHES.c.created_at.type),
            },
        )
        .returning(*_DISPATCHES.c),
        # heartbeats carry no foreign key (partitions are dropped without locking devices): the
        # statement itself stores a beat only for a device that exists
        "heartbeat": insert(_HEARTBEATS)
        .from_select(
            heartbeat_columns,
            # PostgreSQL types a bare NULL in a select list as text: cast every parameter to its column
            select(
                *(
                    cast(p, p.type) if dialect == "postgresql" else p
                    for p in _params(_HEARTBEATS, *heartbeat_columns).values()
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
        "download": insert(_DOWNLOADS)
        .values(**_params(_DOWNLOADS, "build_id", "source", "token_id", "ip", "created_at"))
        .returning(*_DOWNLOADS.c),
    }


def _statement(db: Session, name: str) -> Any:
    dialect = db.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"NexMDM supports SQLite and PostgreSQL, not {dialect}")
    return _statements(dialect)[name]


def _refused(exc: IntegrityError, what: str) -> NexMDMError:
    """The domain error for a refused row; a missing parent (a foreign key) is named by ``what``."""
    error = from_database_error(exc) or InvalidArgument("the database refused the row")
    return NotFound(what) if isinstance(error, NotFound) else error


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{field} must be a timezone-aware datetime", field=field)
    return value.astimezone(UTC)


def bucket_floor(moment: datetime, bucket_seconds: int) -> datetime:
    """Floor an aware datetime to its bucket, in exact integer microseconds (no float rounding)."""
    micros = (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    size = bucket_seconds * 1_000_000
    return _EPOCH + timedelta(microseconds=micros - micros % size)


# ------------------------------------------------------------------------------------ dispatches


def record_fcm_dispatch(
    db: Session,
    *,
    request_id: str,
    device_id: str,
    action: str,
    payload_hash: str,
    fcm_status: str = "pending",
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a command dispatch once per ``request_id``.

    Returns ``{"created": bool, "dispatch": {...}}``. A duplicate returns the existing record unchanged
    (whatever its action or payload) and counts the replay durably in ``replay_count``.
    """
    started = time.perf_counter()
    validation.request_id(request_id)
    validation.device_id(device_id)
    validation.action(action)
    validation.payload_hash_value(payload_hash)
    validation.payload(payload)
    if fcm_status not in FCM_STATUSES:
        raise InvalidArgument(f"fcm_status must be one of {', '.join(FCM_STATUSES)}", field="fcm_status")

    params = {
        "request_id": request_id,
        "device_id": device_id,
        "action": action,
        "payload": payload,
        "payload_hash": payload_hash,
        "fcm_status": fcm_status,
        "created_at": utcnow(),
    }
    try:
        row = db.execute(_statement(db, "dispatch"), params).mappings().one()
    except IntegrityError as exc:
        raise _refused(exc, f"device {device_id!r} does not exist") from None
    created = row["replay_count"] == 0
    log_operation("create" if created else "idempotency_hit", "fcm_dispatches", {"request_id": request_id}, started)
    return {"created": created, "dispatch": dict(row)}


# ------------------------------------------------------------------------------------ heartbeats


def validate_heartbeat_data(data: object) -> dict[str, Any]:
    """The known heartbeat fields, checked; unknown keys are ignored and never stored."""
    if not isinstance(data, Mapping):
        raise InvalidArgument("heartbeat_data must be a mapping", field="heartbeat_data")
    status = data.get("status")
    if status is not None and (not isinstance(status, str) or not validation.STATUS_RE.fullmatch(status)):
        raise InvalidArgument("status must be a short lowercase word such as 'ok'", field="status")
    battery = data.get("battery_pct")
    if battery is not None and (isinstance(battery, bool) or not isinstance(battery, int) or not 0 <= battery <= 100):
        raise InvalidArgument("battery_pct must be an integer from 0 to 100", field="battery_pct")
    plugged = data.get("plugged")
    if plugged is not None and not isinstance(plugged, bool):
        raise InvalidArgument("plugged must be true or false", field="plugged")
    network = data.get("network_type")
    if network is not None and network not in NETWORK_TYPES:
        raise InvalidArgument(f"network_type must be one of {', '.join(NETWORK_TYPES)}", field="network_type")
    agent = validation.text(data.get("agent_version"), "agent_version", max_length=64)
    return {
        "status": status,
        "battery_pct": battery,
        "plugged": plugged,
        "network_type": network,
        "agent_version": agent,
    }


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


# ------------------------------------------------------------------------------------- downloads


def record_apk_download(
    db: Session, *, build_id: int, source: str, token_id: str | None = None, ip: str | None = None
) -> dict[str, Any]:
    """Append one download audit event (no idempotency: every download is an event)."""
    started = time.perf_counter()
    if isinstance(build_id, bool) or not isinstance(build_id, int) or build_id < 1:
        raise InvalidArgument("build_id must be a positive integer", field="build_id")
    if source not in DOWNLOAD_SOURCES:
        raise InvalidArgument(f"source must be one of {', '.join(DOWNLOAD_SOURCES)}", field="source")
    validation.text(token_id, "token_id", max_length=160)
    ip = validation.ip_address(ip)
    params = {"build_id": build_id, "source": source, "token_id": token_id, "ip": ip, "created_at": utcnow()}
    try:
        row = db.execute(_statement(db, "download"), params).mappings().one()
    except IntegrityError as exc:
        raise _refused(exc, f"APK build {build_id} does not exist") from None
    log_operation("create", "apk_download_events", {"build_id": build_id}, started)
    return {"download": dict(row)}
