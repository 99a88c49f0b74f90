"""The fleet at a glance: what ``nexmdm top`` shows and the fleet-state gauges on ``/metrics`` export.

Every query here is bounded by an index, so that one refresh stays cheap at 100,000 devices and
10 million heartbeats (``make bench`` measures it):

* device states are counted by ranges of ``devices.last_seen_at`` (its index) and the few revoked rows;
* heartbeats of the last minute by a range of ``device_heartbeats.bucket_start`` (its index; on
  PostgreSQL the range also prunes every partition but today's);
* commands by the ``(status, created_at)`` and ``created_at`` indexes, over the last hour;
* devices that went offline in the last hour by a range of ``last_seen_at``.

Nothing here scans the whole heartbeat or dispatch table, and nothing commits.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.delivery import queue_stats
from core.models import COMMAND_STATUSES, Device, DeviceHeartbeat, FcmDispatch
from core.settings import Settings
from core.types import utcnow

DEVICE_STATES = ("online", "stale", "offline", "revoked")
#: heartbeat rate window
RATE_WINDOW = timedelta(minutes=1)
#: commands (by status, latencies) and went-offline devices look this far back
RECENT_WINDOW = timedelta(hours=1)
PERCENTILES = (50, 99)


def device_counts(db: Session, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Devices by state: ``online``, ``stale``, ``offline`` (including never heard from), ``revoked``."""
    now = now or utcnow()
    online_since = now - timedelta(seconds=settings.device_online_seconds)
    stale_since = now - timedelta(seconds=settings.device_offline_seconds)
    live = Device.revoked_at.is_(None)
    total, revoked = db.execute(select(func.count(), func.count(Device.revoked_at)).select_from(Device)).one()
    online = db.scalar(select(func.count()).where(live, Device.last_seen_at >= online_since)) or 0
    stale = (
        db.scalar(
            select(func.count()).where(live, Device.last_seen_at >= stale_since, Device.last_seen_at < online_since)
        )
        or 0
    )
    offline = total - revoked - online - stale
    return {"online": online, "stale": stale, "offline": offline, "revoked": revoked, "total": total}


def heartbeat_rate(db: Session, now: datetime | None = None) -> dict[str, Any]:
    """Heartbeats stored over the last minute (one row per device and bucket) and the rate per second."""
    now = now or utcnow()
    stored = db.scalar(
        select(func.count()).select_from(DeviceHeartbeat).where(DeviceHeartbeat.bucket_start >= now - RATE_WINDOW)
    )
    stored = int(stored or 0)
    return {"window_seconds": int(RATE_WINDOW.total_seconds()), "stored": stored, "per_second": stored / 60}


def command_counts(db: Session, now: datetime | None = None) -> dict[str, Any]:
    """Commands created in the last hour by status, and every command still pending."""
    now = now or utcnow()
    rows = db.execute(
        select(FcmDispatch.status, func.count())
        .where(FcmDispatch.created_at >= now - RECENT_WINDOW)
        .group_by(FcmDispatch.status)
    ).all()
    last_hour = dict.fromkeys(COMMAND_STATUSES, 0) | {status: int(n) for status, n in rows}
    pending = db.scalar(select(func.count()).select_from(FcmDispatch).where(FcmDispatch.status == "pending"))
    return {"last_hour": last_hour, "pending": int(pending or 0)}


def _nearest_rank(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    index = math.ceil(pct / 100 * len(values)) - 1
    return values[max(0, min(len(values) - 1, index))]


_PG_LATENCY = text(
    """
    SELECT count(*), percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (
        ORDER BY extract(epoch FROM {end} - created_at) * 1000)
    FROM fcm_dispatches
    WHERE created_at >= :since AND {end} IS NOT NULL
    """
)


def latencies(db: Session, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Push latency (created → FCM accepted) and ack latency (created → acked, pushed or not), p50 and p99
    in milliseconds, over the commands created in the last hour."""
    since = (now or utcnow()) - RECENT_WINDOW
    result: dict[str, dict[str, Any]] = {}
    for name, column in (("push_latency_ms", "sent_at"), ("ack_latency_ms", "acked_at")):
        if db.get_bind().dialect.name == "postgresql":
            sql = text(_PG_LATENCY.text.format(end=column))
            count, pcts = db.execute(sql, {"since": since}).one()
            p50, p99 = (float(v) if v is not None else None for v in (pcts or (None, None)))
        else:
            end = getattr(FcmDispatch, column)
            pairs = db.execute(
                select(FcmDispatch.created_at, end).where(FcmDispatch.created_at >= since, end.is_not(None))
            ).all()
            values = sorted(max(0.0, (b - a).total_seconds() * 1000) for a, b in pairs)
            count, p50, p99 = len(values), _nearest_rank(values, 50), _nearest_rank(values, 99)
        result[name] = {"p50": p50, "p99": p99, "count": int(count)}
    return result


def went_offline(db: Session, settings: Settings, now: datetime | None = None, *, limit: int = 10) -> dict[str, Any]:
    """Devices that crossed the offline threshold in the last hour (not revoked), most recent first."""
    now = now or utcnow()
    horizon = now - timedelta(seconds=settings.device_offline_seconds)
    where = (Device.revoked_at.is_(None), Device.last_seen_at < horizon, Device.last_seen_at >= horizon - RECENT_WINDOW)
    count = db.scalar(select(func.count()).select_from(Device).where(*where)) or 0
    rows = db.execute(
        select(Device.id, Device.last_seen_at).where(*where).order_by(Device.last_seen_at.desc()).limit(limit)
    ).all()
    return {
        "count": int(count),
        "items": [
            {"device_id": device_id, "last_seen_at": seen, "offline_since": seen + (now - horizon)}
            for device_id, seen in rows
        ],
    }


def oldest_heartbeat_age(db: Session, now: datetime | None = None) -> float | None:
    """Seconds since the oldest stored heartbeat (``None``: none stored); retention keeps it bounded."""
    oldest = db.scalar(select(func.min(DeviceHeartbeat.bucket_start)))
    return ((now or utcnow()) - oldest).total_seconds() if oldest is not None else None


def snapshot(
    db: Session, settings: Settings, now: datetime | None = None, *, offline_limit: int = 10
) -> dict[str, Any]:
    """Everything ``nexmdm top`` shows, from one consistent ``now``."""
    now = now or utcnow()
    return {
        "at": now,
        "devices": device_counts(db, settings, now),
        "heartbeats": heartbeat_rate(db, now),
        "commands": command_counts(db, now),
        "push_queue": queue_stats(db, now),
        "latency": latencies(db, now),
        "went_offline": went_offline(db, settings, now, limit=offline_limit),
    }
