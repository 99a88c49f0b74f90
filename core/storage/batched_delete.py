"""The batched-delete engine of retention: bounded batches that walk a unique key, each its own transaction.

A real run commits after every batch so that it never holds a long lock; a dry run counts and writes
nothing. Every batch waits at most the cleanup's lock timeout and is retried a bounded number of times
(:mod:`core.storage.timeouts`). The entities and their conditions are :mod:`core.ops.retention`'s and
:mod:`core.events.cleanup`'s.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument, LockLost, LockTimeout
from core.storage import timeouts
from core.storage.operations import log_operation, rowcount, session_settings
from core.storage.types import utcnow

#: per-step progress of a retention cleanup (batches, dropped partitions, retries); shown by ``nexmdm -v``
progress = logging.getLogger("nexmdm.cleanup")


def retention_for(db: Session, entity: str, retention_days: int | None) -> int:
    if retention_days is None:
        return session_settings(db).retention_days()[entity]
    # the audit trail keeps at least a day: 0 would erase the record of everything, this run included
    least = 1 if entity == "audit_events" else 0
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < least:
        raise InvalidArgument(f"retention days for {entity} must be a whole number >= {least}", field=entity)
    return retention_days


def _after(keys: tuple[ColumnElement[Any], ...], low: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows strictly after ``low`` in ``keys`` order (the plain ``>=`` on the first key serves the index)."""
    if len(keys) == 1:
        after: ColumnElement[bool] = keys[0] > low[0]
        return after
    return and_(keys[0] >= low[0], or_(keys[0] > low[0], keys[1] > low[1]))


def _up_to(keys: tuple[ColumnElement[Any], ...], high: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows up to and including ``high`` in ``keys`` order."""
    if len(keys) == 1:
        up_to: ColumnElement[bool] = keys[0] <= high[0]
        return up_to
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
    count = rowcount(db.execute(delete(table).where(batch_where)))
    db.commit()
    return (None if high is None else tuple(high)), count


def stopped(exc: LockTimeout, deleted: int) -> LockTimeout:
    error = LockTimeout(
        f"{exc.message}; cleanup stopped after deleting {deleted:,} rows (they stay deleted): run it again later",
        field=exc.field,
    )
    error.deleted = deleted
    return error


#: ``db.info`` key of ``core.ops.retention.run_all_retention_cleanups``'s ``lock_lost``: checked before every batch
LOCK_LOST = "cleanup_lock_lost"


def stop_if_lost(db: Session, entity: str, deleted: int) -> None:
    """Raise ``LockLost`` once the maintenance lock may have passed on: never delete beside its new holder."""
    lost = db.info.get(LOCK_LOST)
    if lost is not None and lost():
        error = LockLost(
            f"the maintenance lock passed to another holder; cleanup stopped after deleting {deleted:,} rows"
            " (they stay deleted): run it again later",
            field=entity,
        )
        error.deleted = deleted
        raise error


def batched_cleanup(
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
    (``core.storage.timeouts``). Each batch logs a ``cleanup_batch`` line on the ``nexmdm.cleanup`` logger.
    """
    started = time.perf_counter() if started is None else started
    if cutoff is None:
        cutoff = utcnow() - timedelta(days=retention_for(db, entity, retention_days))
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
        stop_if_lost(db, entity, deleted)
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
            raise stopped(exc, deleted) from None
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
