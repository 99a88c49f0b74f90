"""Device presence: ``device.online`` / ``device.offline`` transitions, one event per transition.

The state announced last lives in ``device_presence``, never on ``devices`` (which every heartbeat
updates): heartbeats write nothing here. The maintenance leader (``core.ops.maintenance``) calls
:func:`sweep`; it would be safe to run everywhere at once, because each transition is a conditional
UPDATE (``WHERE state = 'online'``) whose RETURNING rows alone get an event, and batches are claimed with
``SKIP LOCKED`` on PostgreSQL (SQLite serializes writers).

A device is offline when it has not been seen for ``NEXMDM_DEVICE_OFFLINE_SECONDS``. After an outage of
the server itself (no sweep for ``OUTAGE_SECONDS``), devices could not report in: they get one whole
offline window from the moment sweeping resumes before any ``device.offline`` (no storm at restart).
A device seen for the first time is recorded without an event (``device.enrolled`` announced it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.events.webhooks import emit_many, subscribers
from core.models import Device, DevicePresence, PresenceSweep
from core.storage.dialect import insert_for, is_postgresql
from core.storage.types import utcnow

#: no sweep for this long means the server (every process) was down
OUTAGE_SECONDS = 120
BATCH = 1000
_NAME = "presence"
_PRESENCE: Table = DevicePresence.__table__  # type: ignore[assignment]


def _mark(db: Session, now: datetime) -> datetime:
    """Record this sweep; returns ``grace_from`` (moved to now after an outage)."""
    row = db.get(PresenceSweep, _NAME, with_for_update=is_postgresql(db))
    if row is None:  # the very first sweep (several processes may start at once)
        db.execute(
            insert_for(db, PresenceSweep)
            .values(name=_NAME, swept_at=now, grace_from=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return now
    if now - row.swept_at > timedelta(seconds=OUTAGE_SECONDS):
        row.grace_from = now
    row.swept_at = max(row.swept_at, now)
    return row.grace_from


def _first_sightings(db: Session, cutoff: datetime, now: datetime) -> int:
    """Track devices seen for the first time (no event), one batch."""
    known = select(DevicePresence.device_id).where(DevicePresence.device_id == Device.id)
    rows = db.execute(
        select(Device.id, Device.last_seen_at)
        .where(Device.last_seen_at.is_not(None), Device.revoked_at.is_(None), ~known.exists())
        .order_by(Device.id)
        .limit(BATCH)
    ).all()
    if not rows:
        return 0
    values = [
        {"device_id": r.id, "state": "online" if r.last_seen_at >= cutoff else "offline", "changed_at": now}
        for r in rows
    ]
    db.execute(insert_for(db, _PRESENCE).values(values).on_conflict_do_nothing(index_elements=["device_id"]))
    return len(rows)


def _transitions(db: Session, *, going: str, cutoff: datetime, now: datetime) -> list[dict[str, Any]]:
    """One batch of devices going ``offline`` or back ``online``; returns those this call moved."""
    was = "online" if going == "offline" else "offline"
    if going == "offline":
        condition = Device.last_seen_at < cutoff
    else:
        condition = and_(Device.last_seen_at >= cutoff, Device.last_seen_at > DevicePresence.changed_at)
    candidates = db.execute(
        select(DevicePresence.device_id, Device.last_seen_at)
        .join(Device, Device.id == DevicePresence.device_id)
        .where(DevicePresence.state == was, Device.revoked_at.is_(None), condition)
        .order_by(DevicePresence.device_id)
        .limit(BATCH)
        .with_for_update(skip_locked=True, of=DevicePresence)
    ).all()
    if not candidates:
        return []
    seen = {c.device_id: c.last_seen_at for c in candidates}
    moved = db.execute(
        update(_PRESENCE)
        .where(_PRESENCE.c.device_id.in_(seen), _PRESENCE.c.state == was)
        .values(state=going, changed_at=now)
        .returning(_PRESENCE.c.device_id)
    ).scalars()
    return [{"device_id": device_id, "last_seen_at": seen[device_id]} for device_id in sorted(moved)]


def sweep(sessions: sessionmaker[Session], settings: Settings, *, now: datetime | None = None) -> dict[str, int]:
    """Find and announce transitions, in batches of ``BATCH`` (each its own transaction)."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.device_offline_seconds)
    with sessions.begin() as db:
        grace_from = _mark(db, now)
    counts = {"tracked": 0, "offline": 0, "online": 0}
    while True:
        with sessions.begin() as db:
            added = _first_sightings(db, cutoff, now)
        counts["tracked"] += added
        if added < BATCH:
            break
    for going in ("online", "offline"):
        if going == "offline" and now - grace_from < timedelta(seconds=settings.device_offline_seconds):
            continue  # after an outage: one full window before anyone is declared offline
        while True:
            with sessions.begin() as db:
                moved = _transitions(db, going=going, cutoff=cutoff, now=now)
                endpoints = subscribers(db, f"device.{going}") if moved else []
                if endpoints:
                    events = [
                        ({"device_id": d["device_id"], "last_seen_at": d["last_seen_at"].isoformat()}, d["device_id"])
                        for d in moved
                    ]
                    emit_many(db, f"device.{going}", events, endpoints=endpoints)
            counts[going] += len(moved)
            if len(moved) < BATCH:
                break
    return counts
