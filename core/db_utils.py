"""Persistence helpers: the seed's API (see ``shared/CONTRACT.md``, "Persistence helpers").

Each takes a SQLAlchemy ``Session`` first, returns a plain dict and logs one ``db_operation`` line on
the ``nexmdm.db`` logger. Idempotency and deduplication are one ``INSERT ... ON CONFLICT`` statement
against the table's unique key on both databases: no select-then-insert races. The helpers never
commit; the caller owns the transaction. The one exception is a real (not dry) retention cleanup, which
commits after every bounded batch so that it never holds a long lock.

When a helper raises :class:`core.errors.NotFound` for an unknown device or build, the database has
refused the row (a foreign key); on PostgreSQL the caller's transaction must then be rolled back.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, and_, bindparam, cast, delete, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import partitions, timeouts, validation
from core.errors import Conflict, InvalidArgument, LockTimeout, NotFound
from core.events import retention
from core.models import (
    DOWNLOAD_SOURCES,
    FCM_STATUSES,
    FINISHED_STATUSES,
    NETWORK_TYPES,
    ApkDownloadEvent,
    Device,
    DeviceHeartbeat,
    FcmDispatch,
)
from core.settings import Settings, get_settings
from core.types import utcnow

logger = logging.getLogger("nexmdm.db")
#: per-step progress of a retention cleanup (batches, dropped partitions, retries); shown by ``nexmdm -v``
progress = logging.getLogger("nexmdm.cleanup")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DISPATCHES: Table = FcmDispatch.__table__  # type: ignore[assignment]
_HEARTBEATS: Table = DeviceHeartbeat.__table__  # type: ignore[assignment]
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
_DOWNLOADS: Table = ApkDownloadEvent.__table__  # type: ignore[assignment]
CLEANUP_ENTITIES = ("device_heartbeats", "fcm_dispatches", "apk_download_events", "audit_events", "webhook_outbox")


# --------------------------------------------------------------------------------------- plumbing


def session_settings(db: Session) -> Settings:
    """The settings a session was made with (``make_session_factory``), else the environment's."""
    settings = db.info.get("settings")
    return settings if isinstance(settings, Settings) else get_settings()


def log_operation(
    event: str, entity: str, keys: Mapping[str, Any], started: float, *, level: int = logging.INFO
) -> float:
    """Log the contract's ``db_operation`` line and return the latency in milliseconds."""
    latency_ms = (time.perf_counter() - started) * 1000
    logger.log(level, "db_operation event=%s entity=%s keys=%r latency_ms=%.1f", event, entity, dict(keys), latency_ms)
    return latency_ms


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
        .values(status="pending", replay_count=0, attempts=0, **_params(_DISPATCHES, *dispatch_columns))
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
        .returning(*_HEARTBEATS.c),
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


def _refused(exc: IntegrityError, what: str) -> NexMDMErrorType:
    message = str(exc.orig).lower()
    if "foreign key" in message:
        return NotFound(what)
    return InvalidArgument(f"the database refused the row: {str(exc.orig).splitlines()[0]}")


NexMDMErrorType = NotFound | InvalidArgument


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
    validation.sha256_hex(payload_hash)
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
    try:
        row = db.execute(_statement(db, "heartbeat"), key | {"received_at": received, **fields}).mappings().first()
    except IntegrityError as exc:
        bind = db.get_bind()
        partitions.forget_if_missing(exc, bind if isinstance(bind, Engine) else bind.engine)
        raise
    created = row is not None
    if row is None:  # a duplicate (read the row already stored for this bucket), or no such device
        row = db.execute(_statement(db, "heartbeat_existing"), key).mappings().first()
        if row is None:
            if db.execute(_statement(db, "device_exists"), key).first() is None:
                raise NotFound(f"device {device_id!r} does not exist")
            # the bucket's row went between the two statements (a cleanup of a backfilled old bucket)
            raise Conflict(f"the heartbeat bucket {bucket_start.isoformat()} changed meanwhile; send it again")
    threshold = session_settings(db).slow_heartbeat_ms
    latency_ms = (time.perf_counter() - started) * 1000
    log_operation(
        "create" if created else "dedup_hit",
        "device_heartbeats",
        {"device_id": device_id},
        started,
        level=logging.WARNING if latency_ms > threshold else logging.INFO,
    )
    return {"created": created, "bucket_start": bucket_start, "heartbeat": dict(row)}


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


# -------------------------------------------------------------------------------------- cleanups


def _retention(db: Session, entity: str, retention_days: int | None) -> int:
    if retention_days is None:
        return session_settings(db).retention_days()[entity]
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 0:
        raise InvalidArgument(f"retention days for {entity} must be a whole number >= 0", field=entity)
    return retention_days


def _after(keys: tuple[ColumnElement[Any], ...], low: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows strictly after ``low`` in ``keys`` order (the plain ``>=`` on the first key serves the index)."""
    if len(keys) == 1:
        return keys[0] > low[0]
    return and_(keys[0] >= low[0], or_(keys[0] > low[0], keys[1] > low[1]))


def _up_to(keys: tuple[ColumnElement[Any], ...], high: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows up to and including ``high`` in ``keys`` order."""
    if len(keys) == 1:
        return keys[0] <= high[0]
    return and_(keys[0] <= high[0], or_(keys[0] < high[0], keys[1] <= high[1]))


@dataclass
class _Batching:
    """One cleanup run's batch size; halved after a batch runs out of statement time."""

    size: int

    def after_timeout(self, db: Session, kind: str) -> None:
        db.rollback()
        if kind == "statement_timeout":
            self.size = max(1, self.size // 2)


def _delete_batch(
    db: Session,
    table: Table,
    keys: tuple[ColumnElement[Any], ...],
    where: ColumnElement[bool],
    low: tuple[Any, ...] | None,
    batching: _Batching,
    limits: timeouts.Limits,
) -> tuple[tuple[Any, ...] | None, int]:
    """Delete the next batch after ``low`` in its own transaction; returns its last key and row count."""
    timeouts.set_local(db, limits)
    window = where if low is None else and_(where, _after(keys, low))
    high = db.execute(select(*keys).where(window).order_by(*keys).offset(batching.size - 1).limit(1)).first()
    batch_where = window if high is None else and_(window, _up_to(keys, tuple(high)))
    count = db.execute(delete(table).where(batch_where)).rowcount or 0
    db.commit()
    return (None if high is None else tuple(high)), count


def _stopped(exc: LockTimeout, deleted: int) -> LockTimeout:
    return LockTimeout(
        f"{exc.message}; cleanup stopped after deleting {deleted:,} rows (they stay deleted): run it again later",
        field=exc.field,
    )


def _cleanup(
    db: Session,
    *,
    entity: str,
    table: Table,
    keys: tuple[ColumnElement[Any], ...],
    condition: Callable[[datetime], ColumnElement[bool]],
    retention_days: int | None,
    dry_run: bool,
    cutoff: datetime | None = None,
    started: float | None = None,
    already_deleted: int = 0,
) -> dict[str, Any]:
    """Delete rows matching ``condition(cutoff)`` in batches that walk ``keys`` (unique together) upwards.

    Each batch ends at the keys of the ``batch_size``-th remaining row, and the next starts strictly
    after it, so no batch holds more than ``batch_size`` rows nor rescans the index entries that earlier
    batches left dead. A real run commits after each batch; on PostgreSQL each batch runs under the
    cleanup's ``lock_timeout`` and ``statement_timeout`` and is retried when one fires
    (``core.timeouts``). Each batch logs a ``cleanup_batch`` line on the ``nexmdm.cleanup`` logger.
    """
    started = time.perf_counter() if started is None else started
    if cutoff is None:
        cutoff = utcnow() - timedelta(days=_retention(db, entity, retention_days))
    where = condition(cutoff)
    if dry_run:
        count = db.execute(select(func.count()).select_from(table).where(where)).scalar_one()
        latency = log_operation("cleanup_dry_run", entity, {"would_delete": count}, started)
        return {"entity": entity, "cutoff": cutoff, "would_delete": count, "latency_ms": round(latency, 1)}

    settings = session_settings(db)
    limits = timeouts.Limits.of(settings)
    batching = _Batching(settings.cleanup_batch_size)
    deleted = already_deleted
    low: tuple[Any, ...] | None = None
    while True:
        batch_started = time.perf_counter()
        try:
            high, count = timeouts.retrying(
                functools.partial(_delete_batch, db, table, keys, where, low, batching, limits),
                limits=limits,
                entity=entity,
                what="a batch delete",
                on_timeout=functools.partial(batching.after_timeout, db),
            )
        except LockTimeout as exc:
            raise _stopped(exc, deleted) from None
        deleted += count
        progress.info(
            "cleanup_batch entity=%s deleted=%d batch_size=%d latency_ms=%.1f",
            entity,
            count,
            batching.size,
            (time.perf_counter() - batch_started) * 1000,
        )
        if high is None:
            break
        low = high
        if settings.cleanup_batch_pause_ms:
            time.sleep(settings.cleanup_batch_pause_ms / 1000)  # let ingestion's commits through between batches
    latency = log_operation("cleanup", entity, {"deleted": deleted}, started)
    return {"entity": entity, "cutoff": cutoff, "deleted": deleted, "latency_ms": round(latency, 1)}


def _count_partition(db: Session, name: str, limits: timeouts.Limits) -> int:
    # only the lock wait is bounded: counting a big day takes a while, but its ACCESS SHARE lock
    # blocks nobody (only the detach below wants a stronger lock on an expired day)
    db.execute(text("SELECT set_config('lock_timeout', :lock, true)"), {"lock": f"{limits.lock_timeout_ms}ms"})
    rows = db.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
    db.commit()
    return int(rows)


def _ensure_ahead(db: Session, limits: timeouts.Limits) -> None:
    timeouts.set_local(db, limits)  # creating a partition locks the parent: never queue behind a long lock
    partitions.ensure_ahead(db.connection())
    db.commit()


def _drop_expired_partitions(db: Session, cutoff: datetime) -> int:
    """Detach and drop the whole days before ``cutoff``; returns the rows they held."""
    engine = db.get_bind()
    limits = timeouts.Limits.of(session_settings(db))

    def rollback(_kind: str) -> None:
        db.rollback()

    dropped = 0
    db.commit()  # DETACH ... CONCURRENTLY waits for open transactions, ours included
    try:
        for _day, name in partitions.expired_partitions(db.connection(), cutoff):
            step_started = time.perf_counter()
            db.commit()
            rows = timeouts.retrying(
                functools.partial(_count_partition, db, name, limits),
                limits=limits,
                entity="device_heartbeats",
                what=f"counting {name}",
                on_timeout=rollback,
            )
            timeouts.retrying(
                functools.partial(
                    partitions.drop_partition,
                    engine,  # type: ignore[arg-type]
                    name,
                    lock_timeout_ms=limits.lock_timeout_ms,
                    statement_timeout_ms=limits.statement_timeout_ms,
                ),
                limits=limits,
                entity="device_heartbeats",
                what=f"detaching and dropping {name}",
                on_timeout=rollback,
            )
            dropped += rows
            progress.info(
                "cleanup_partition entity=device_heartbeats partition=%s deleted=%d latency_ms=%.1f",
                name,
                rows,
                (time.perf_counter() - step_started) * 1000,
            )
        timeouts.retrying(
            functools.partial(_ensure_ahead, db, limits),
            limits=limits,
            entity="device_heartbeats",
            what="creating the coming days' partitions",
            on_timeout=rollback,
        )
    except LockTimeout as exc:
        raise _stopped(exc, dropped) from None
    return dropped


def cleanup_old_heartbeats(db: Session, *, retention_days: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete heartbeats whose bucket started before now minus the retention period.

    On a partitioned PostgreSQL table, whole expired daily partitions are detached and dropped first
    (their rows counted as deleted), then the remainder of the boundary day is deleted in batches; a
    real run also creates the partitions for the coming days. Every step waits at most the cleanup's
    lock timeout and is retried a bounded number of times (``core.timeouts``); then it raises
    ``LockTimeout``.
    """
    started = time.perf_counter()
    cutoff = utcnow() - timedelta(days=_retention(db, "device_heartbeats", retention_days))
    dropped = 0
    if not dry_run and partitions.is_partitioned(db.connection()):
        dropped = _drop_expired_partitions(db, cutoff)
    return _cleanup(
        db,
        entity="device_heartbeats",
        table=_HEARTBEATS,
        keys=(_HEARTBEATS.c.bucket_start, _HEARTBEATS.c.device_id),
        condition=lambda cutoff: _HEARTBEATS.c.bucket_start < cutoff,
        retention_days=retention_days,
        dry_run=dry_run,
        cutoff=cutoff,
        started=started,
        already_deleted=dropped,
    )


def cleanup_old_fcm_dispatches(
    db: Session, *, retention_days: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete finished dispatches (acked, failed, expired) created before the cutoff; never pending ones."""
    return _cleanup(
        db,
        entity="fcm_dispatches",
        table=_DISPATCHES,
        keys=(_DISPATCHES.c.id,),
        condition=lambda cutoff: and_(_DISPATCHES.c.status.in_(FINISHED_STATUSES), _DISPATCHES.c.created_at < cutoff),
        retention_days=retention_days,
        dry_run=dry_run,
    )


def cleanup_old_apk_download_events(
    db: Session, *, retention_days: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete download audit events older than the cutoff."""
    return _cleanup(
        db,
        entity="apk_download_events",
        table=_DOWNLOADS,
        keys=(_DOWNLOADS.c.id,),
        condition=lambda cutoff: _DOWNLOADS.c.created_at < cutoff,
        retention_days=retention_days,
        dry_run=dry_run,
    )


_CLEANUPS: dict[str, Callable[..., dict[str, Any]]] = {
    "device_heartbeats": cleanup_old_heartbeats,
    "fcm_dispatches": cleanup_old_fcm_dispatches,
    "apk_download_events": cleanup_old_apk_download_events,
    "audit_events": retention.cleanup_old_audit_events,
    "webhook_outbox": retention.cleanup_old_webhook_deliveries,
}


def run_all_retention_cleanups(
    db: Session,
    *,
    dry_run: bool = False,
    retention_days: Mapping[str, int | None] | None = None,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every cleanup; ``retention_days`` maps entity to days and overrides the configured period.

    ``on_result(entity, result)`` is called after each entity (progress display). Each entity ends its
    own transaction: a real run has committed its batches, a dry run's counting is rolled back.
    """
    overrides = dict(retention_days or {})
    unknown = sorted(set(overrides) - set(_CLEANUPS))
    if unknown:
        raise InvalidArgument(
            f"unknown cleanup entity {unknown[0]!r}; known: {', '.join(CLEANUP_ENTITIES)}", field="retention_days"
        )
    for entity, days in overrides.items():
        _retention(db, entity, days)  # validate every override before deleting anything
    results = {}
    for entity, cleanup in _CLEANUPS.items():
        if dry_run and db.get_transaction() is None:
            # counting only: a deferred transaction does not take SQLite's write lock
            db.connection(execution_options={"sqlite_begin": "DEFERRED"})
        results[entity] = cleanup(db, retention_days=overrides.get(entity), dry_run=dry_run)
        if dry_run:
            db.rollback()
        if on_result is not None:
            on_result(entity, results[entity])
    return results
