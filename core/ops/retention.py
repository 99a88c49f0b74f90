"""Retention: the cleanup engine behind ``nexmdm cleanup`` and the seed's ``cleanup_old_*`` helpers.

Rows go in bounded batches that walk a unique key upwards, each batch in its own transaction (a real run
commits per batch so that it never holds a long lock; a dry run counts and writes nothing). On a
partitioned PostgreSQL heartbeats table whole expired days are detached and dropped first. Every step
waits at most the cleanup's lock timeout and is retried a bounded number of times (``core.storage.timeouts``).
``core.db_utils`` re-exports the public names, so the seed's import path keeps working.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, select, text
from sqlalchemy.orm import Session

from core.access import console
from core.base.errors import InvalidArgument, LockLost, LockTimeout
from core.devices import locations
from core.events import cleanup as events_retention
from core.heartbeats import partitions
from core.inventory import cleanup as inventory_retention
from core.models import (
    APPROVAL_FINAL,
    FINISHED_STATUSES,
    ApkDownloadEvent,
    Approval,
    Campaign,
    DeviceHeartbeat,
    FcmDispatch,
)
from core.storage import timeouts
from core.storage.batched_delete import LOCK_LOST, batched_cleanup, progress, retention_for, stop_if_lost, stopped
from core.storage.operations import session_settings
from core.storage.types import utcnow

_DISPATCHES: Table = FcmDispatch.__table__  # type: ignore[assignment]
_HEARTBEATS: Table = DeviceHeartbeat.__table__  # type: ignore[assignment]
_DOWNLOADS: Table = ApkDownloadEvent.__table__  # type: ignore[assignment]
_CAMPAIGNS: Table = Campaign.__table__  # type: ignore[assignment]
_APPROVALS: Table = Approval.__table__  # type: ignore[assignment]
CLEANUP_ENTITIES = (
    "device_heartbeats",
    "fcm_dispatches",
    "apk_download_events",
    "campaigns",
    "audit_events",
    "webhook_outbox",
    "device_app_changes",
    "device_locations",
    "approvals",
    "console_sessions",
)
#: a campaign in one of these states may still release, halt or complete: its commands are kept
_UNFINISHED_CAMPAIGN = ("awaiting_approval", "running", "paused", "halted")


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
            stop_if_lost(db, "device_heartbeats", dropped)
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
    except LockLost:
        raise
    except LockTimeout as exc:
        raise stopped(exc, dropped) from None
    return dropped


def cleanup_old_heartbeats(db: Session, *, retention_days: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete heartbeats whose bucket started before now minus the retention period.

    On a partitioned PostgreSQL table, whole expired daily partitions are detached and dropped first
    (their rows counted as deleted), then the remainder of the boundary day is deleted in batches; a
    real run also creates the partitions for the coming days. Every step waits at most the cleanup's
    lock timeout and is retried a bounded number of times (``core.storage.timeouts``); then it raises
    ``LockTimeout``.
    """
    started = time.perf_counter()
    cutoff = utcnow() - timedelta(days=retention_for(db, "device_heartbeats", retention_days))
    dropped = 0
    if not dry_run and partitions.is_partitioned(db.connection()):
        dropped = _drop_expired_partitions(db, cutoff)
    return batched_cleanup(
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
    """Delete finished dispatches (acked, failed, expired) created before the cutoff; never pending ones,
    nor any command of a campaign that has not ended (its counts come from them)."""
    unfinished = select(_CAMPAIGNS.c.id).where(
        _CAMPAIGNS.c.id == _DISPATCHES.c.campaign_id, _CAMPAIGNS.c.status.in_(_UNFINISHED_CAMPAIGN)
    )
    return batched_cleanup(
        db,
        entity="fcm_dispatches",
        table=_DISPATCHES,
        keys=(_DISPATCHES.c.id,),
        condition=lambda cutoff: and_(
            _DISPATCHES.c.status.in_(FINISHED_STATUSES),
            _DISPATCHES.c.created_at < cutoff,
            or_(_DISPATCHES.c.campaign_id.is_(None), ~unfinished.exists()),
        ),
        retention_days=retention_days,
        dry_run=dry_run,
    )


def cleanup_old_campaigns(db: Session, *, retention_days: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete campaigns (and their targets) that ended before the cutoff; never an unfinished one."""
    return batched_cleanup(
        db,
        entity="campaigns",
        table=_CAMPAIGNS,
        keys=(_CAMPAIGNS.c.id,),
        condition=lambda cutoff: and_(
            _CAMPAIGNS.c.status.not_in(_UNFINISHED_CAMPAIGN), _CAMPAIGNS.c.finished_at < cutoff
        ),
        retention_days=retention_days,
        dry_run=dry_run,
    )


def cleanup_old_approvals(db: Session, *, retention_days: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete approvals that ended (denied, cancelled, expired, released) and were asked for before the cutoff;
    never an open one (the audit trail keeps who decided, for its own retention)."""
    return batched_cleanup(
        db,
        entity="approvals",
        table=_APPROVALS,
        keys=(_APPROVALS.c.id,),
        condition=lambda cutoff: and_(_APPROVALS.c.state.in_(APPROVAL_FINAL), _APPROVALS.c.requested_at < cutoff),
        retention_days=retention_days,
        dry_run=dry_run,
    )


def cleanup_old_apk_download_events(
    db: Session, *, retention_days: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete download audit events older than the cutoff."""
    return batched_cleanup(
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
    "campaigns": cleanup_old_campaigns,
    "audit_events": events_retention.cleanup_old_audit_events,
    "webhook_outbox": events_retention.cleanup_old_webhook_deliveries,
    "device_app_changes": inventory_retention.cleanup_old_app_changes,
    "device_locations": locations.cleanup_old_device_locations,
    "approvals": cleanup_old_approvals,
    "console_sessions": console.cleanup_old_console_sessions,
}


def run_all_retention_cleanups(
    db: Session,
    *,
    dry_run: bool = False,
    retention_days: Mapping[str, int | None] | None = None,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    lock_lost: Callable[[], bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every cleanup; ``retention_days`` maps entity to days and overrides the configured period.

    ``on_result(entity, result)`` is called after each entity (progress display). Each entity ends its
    own transaction: a real run has committed its batches, a dry run's counting is rolled back. Once
    ``lock_lost()`` is true (``core.ops.locks.Held.lost``) no further batch runs: ``LockLost`` is raised.
    """
    overrides = dict(retention_days or {})
    unknown = sorted(set(overrides) - set(_CLEANUPS))
    if unknown:
        raise InvalidArgument(
            f"unknown cleanup entity {unknown[0]!r}; known: {', '.join(CLEANUP_ENTITIES)}", field="retention_days"
        )
    for entity, days in overrides.items():
        retention_for(db, entity, days)  # validate every override before deleting anything
    results = {}
    db.info[LOCK_LOST] = lock_lost  # the per-entity helpers keep their signatures (the seed's, re-exported)
    try:
        for entity, cleanup in _CLEANUPS.items():
            if dry_run and db.get_transaction() is None:
                # counting only: a deferred transaction does not take SQLite's write lock
                db.connection(execution_options={"sqlite_begin": "DEFERRED"})
            results[entity] = cleanup(db, retention_days=overrides.get(entity), dry_run=dry_run)
            if dry_run:
                db.rollback()
            if on_result is not None:
                on_result(entity, results[entity])
    finally:
        db.info.pop(LOCK_LOST, None)
    return results
