"""The heartbeat hot path: authenticate, store and update the last-seen summary in one statement.

On PostgreSQL ``record_heartbeat_for_token`` is a single statement (one round trip): data-modifying CTEs
look the device up by its token hash, insert the heartbeat with ``ON CONFLICT DO NOTHING`` against
``(device_id, bucket_start)``, and update the device's summary only when a new bucket was stored (or its
FCM token changed). On SQLite, where a statement costs no network round trip, it is the same work done
by ``authenticate_device`` and ``record_device_heartbeat`` in the caller's transaction.

Both paths share the helpers' validation, bucketing and ``db_operation`` log line.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core import db_utils, partitions, security, validation
from core.devices import authenticate_device, record_device_heartbeat
from core.errors import Forbidden, InvalidCredentials
from core.settings import Settings
from core.types import UTCDateTime, utcnow

_SUMMARY = """
    last_seen_at = CASE WHEN ins.device_id IS NULL THEN d.last_seen_at ELSE :received_at END,
    last_status = CASE WHEN ins.device_id IS NULL THEN d.last_status ELSE :status END,
    last_battery_pct = CASE WHEN ins.device_id IS NULL THEN d.last_battery_pct ELSE :battery_pct END,
    last_plugged = CASE WHEN ins.device_id IS NULL THEN d.last_plugged ELSE :plugged END,
    last_network_type = CASE WHEN ins.device_id IS NULL THEN d.last_network_type ELSE :network_type END,
    agent_version = CASE WHEN ins.device_id IS NOT NULL AND :agent_version IS NOT NULL
                         THEN :agent_version ELSE d.agent_version END,
    fcm_token = COALESCE(:fcm_token, d.fcm_token),
    fcm_token_dead_at = CASE WHEN :fcm_token IS NOT NULL THEN NULL ELSE d.fcm_token_dead_at END
"""

_ONE_STATEMENT = text(
    f"""
WITH dev AS (
    SELECT id FROM devices WHERE device_token_hash = :token_hash AND revoked_at IS NULL
), mine AS (
    SELECT id FROM dev WHERE CAST(:claimed AS VARCHAR) IS NULL OR id = :claimed
), ins AS (
    INSERT INTO device_heartbeats
        (device_id, bucket_start, received_at, status, battery_pct, plugged, network_type, agent_version)
    SELECT id, :bucket_start, :received_at, :status, :battery_pct, :plugged, :network_type, :agent_version
    FROM mine
    ON CONFLICT (device_id, bucket_start) DO NOTHING
    RETURNING device_id
), upd AS (
    UPDATE devices d SET {_SUMMARY}
    FROM mine LEFT JOIN ins ON ins.device_id = mine.id
    WHERE d.id = mine.id
      AND (ins.device_id IS NOT NULL
           OR (CAST(:fcm_token AS TEXT) IS NOT NULL
               AND (d.fcm_token IS DISTINCT FROM CAST(:fcm_token AS TEXT) OR d.fcm_token_dead_at IS NOT NULL)))
    RETURNING d.id
)
SELECT dev.id AS device_id, EXISTS (SELECT 1 FROM ins) AS created FROM dev
"""
).bindparams(
    bindparam("bucket_start", type_=UTCDateTime()),
    bindparam("received_at", type_=UTCDateTime()),
)


def record_heartbeat_for_token(
    db: Session,
    *,
    token: str,
    heartbeat_data: dict[str, Any],
    settings: Settings,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """Store a heartbeat for the device a token belongs to.

    Returns ``{"device_id", "created", "bucket_start"}``. Raises ``InvalidCredentials`` for an unknown or
    revoked token and ``Forbidden`` when ``heartbeat_data["device_id"]`` names another device; neither
    writes anything.
    """
    fields = db_utils.validate_heartbeat_data(heartbeat_data)
    fields["agent_version"] = fields["agent_version"] or None  # "" is "not reported", as on SQLite
    claimed = heartbeat_data.get("device_id")
    if claimed is not None:
        validation.device_id(claimed)
    fcm_token = validation.text(heartbeat_data.get("fcm_token"), "fcm_token", max_length=4096) or None
    if db.get_bind().dialect.name != "postgresql":
        device = authenticate_device(db, token)
        if claimed is not None and claimed != device.id:
            raise Forbidden("device_id is not the device this token belongs to")
        result = record_device_heartbeat(db, device, dict(heartbeat_data), settings, received_at=received_at)
        return {"device_id": device.id, "created": result["created"], "bucket_start": result["bucket_start"]}

    started = time.perf_counter()
    received = received_at or utcnow()
    bucket_start = db_utils.bucket_floor(received, settings.heartbeat_bucket_seconds)
    partitions.ensure_for(db, bucket_start)
    row = db.execute(
        _ONE_STATEMENT,
        {
            "token_hash": security.hash_secret(token),
            "claimed": claimed,
            "bucket_start": bucket_start,
            "received_at": received,
            "fcm_token": fcm_token,
            **fields,
        },
    ).first()
    if row is None:
        raise InvalidCredentials("invalid device token")
    if claimed is not None and claimed != row.device_id:
        raise Forbidden("device_id is not the device this token belongs to")
    latency_ms = (time.perf_counter() - started) * 1000
    db_utils.log_operation(
        "create" if row.created else "dedup_hit",
        "device_heartbeats",
        {"device_id": row.device_id},
        started,
        level=logging.WARNING if latency_ms > settings.slow_heartbeat_ms else logging.INFO,
    )
    return {"device_id": row.device_id, "created": bool(row.created), "bucket_start": bucket_start}
