"""Heartbeats, the one owner: authenticate, store, and update the device's last-seen summary.

On PostgreSQL one statement (one round trip) stores a whole batch of beats (``store_beats``; the API
batches the beats that arrive together, ``record_heartbeat_for_token`` stores one): data-modifying CTEs
look the devices up by token hash, insert the heartbeats with ``ON CONFLICT DO NOTHING`` against
``(device_id, bucket_start)``, and update each device's summary only when a new bucket was stored (or its
FCM token changed). On SQLite, where a statement costs no network round trip, ``record_device_heartbeat``
does the same work in the caller's transaction: the seed's helper stores the beat, then one UPDATE moves
the summary.

Both paths share the helpers' validation, bucketing and ``db_operation`` log line, and one rule for the
summary (``_SUMMARY``): it moves only with a newly stored beat that is not older than the one it shows,
so a late beat (received earlier, committed later) never turns it back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, TextClause, bindparam, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from core.base import security, validation
from core.base.errors import Forbidden, InvalidCredentials, NexMDMError
from core.base.settings import Settings
from core.base.versions import version_key
from core.devices.records import authenticate_device
from core.heartbeats import partitions
from core.heartbeats.bucketing import bucket_floor, record_heartbeat_with_bucketing
from core.heartbeats.validate import STORED_FIELDS, validate_heartbeat_data
from core.models import Device
from core.storage.dialect import is_postgresql, name_of
from core.storage.operations import log_operation
from core.storage.types import UTCDateTime, utcnow

#: the summary moves only with a newer stored beat (an older one committing late must not turn it back)
_OLDER = "(ins.device_id IS NULL OR COALESCE(d.last_seen_at > mine.received_at, FALSE))"
_SUMMARY = f"""
    last_seen_at = CASE WHEN {_OLDER} THEN d.last_seen_at ELSE mine.received_at END,
    last_status = CASE WHEN {_OLDER} THEN d.last_status ELSE mine.status END,
    last_battery_pct = CASE WHEN {_OLDER} THEN d.last_battery_pct ELSE mine.battery_pct END,
    last_plugged = CASE WHEN {_OLDER} THEN d.last_plugged ELSE mine.plugged END,
    last_network_type = CASE WHEN {_OLDER} THEN d.last_network_type ELSE mine.network_type END,
    agent_version = CASE WHEN NOT {_OLDER} AND mine.agent_version IS NOT NULL
                         THEN mine.agent_version ELSE d.agent_version END,
    agent_version_key = CASE WHEN NOT {_OLDER} AND mine.agent_version IS NOT NULL
                             THEN mine.agent_version_key ELSE d.agent_version_key END,
    fcm_token = COALESCE(mine.fcm_token, d.fcm_token),
    fcm_token_dead_at = CASE WHEN mine.fcm_token IS NOT NULL THEN NULL ELSE d.fcm_token_dead_at END,
    inventory_seen_at = CASE WHEN NOT {_OLDER} AND mine.inventory_hash = d.inventory_hash
                             THEN mine.received_at ELSE d.inventory_seen_at END
"""

#: One device's summary after one beat (the helpers' path): the same rule, ``mine`` being the beat and
#: ``ins`` holding the device's id only when the beat opened a new bucket.
_ONE = f"""
UPDATE devices AS d SET {_SUMMARY}
FROM ({{mine}}) AS mine
LEFT JOIN (SELECT :device_id AS device_id WHERE :created) AS ins ON ins.device_id = mine.device_id
WHERE d.id = mine.device_id
"""
_ONE_TYPES = {
    "device_id": "text",
    "received_at": "timestamptz",
    **STORED_FIELDS,
    "fcm_token": "text",
    "agent_version_key": "text",
    "inventory_hash": "text",
}


def _one_statement(dialect: str) -> TextClause:
    """``_ONE`` for a dialect: PostgreSQL needs the parameters' types, SQLite takes them as they come."""
    if dialect == "postgresql":
        columns = ", ".join(f"CAST(:{name} AS {kind}) AS {name}" for name, kind in _ONE_TYPES.items())
    else:
        columns = ", ".join(f":{name} AS {name}" for name in _ONE_TYPES)
    statement = text(_ONE.format(mine=f"SELECT {columns}"))
    return statement.bindparams(bindparam("received_at", type_=UTCDateTime()))


_ONE_BY_DIALECT = {dialect: _one_statement(dialect) for dialect in ("postgresql", "sqlite")}

#: Many beats (at most one per token) in one statement: the beats arrive as parallel arrays, the devices
#: are found by token hash, the heartbeats inserted sorted by the unique key (concurrent multi-row upserts
#: in another order could deadlock), and each device's summary updated when its beat opened a bucket or
#: brought a new FCM token. One row comes back per beat whose token belongs to a device.
_BEAT_TYPES = {
    "idx": "int",
    "token_hash": "text",
    "claimed": "text",
    "bucket_start": "timestamptz",
    "received_at": "timestamptz",
    **STORED_FIELDS,
    "fcm_token": "text",
    "agent_version_key": "text",
    "inventory_hash": "text",
}
_STORED = ", ".join(("device_id", "bucket_start", "received_at", *STORED_FIELDS))
_MANY = f"""
WITH beat AS (
    SELECT * FROM unnest({", ".join(f"%({name})s::{kind}[]" for name, kind in _BEAT_TYPES.items())})
        AS b({", ".join(_BEAT_TYPES)})
), dev AS (
    SELECT beat.*, d.id AS device_id, d.inventory_hash AS held_inventory, d.effective_hash AS held_profile
    FROM beat JOIN devices d ON d.device_token_hash = beat.token_hash AND d.revoked_at IS NULL
), mine AS (
    SELECT * FROM dev WHERE claimed IS NULL OR claimed = device_id
), ins AS (
    INSERT INTO device_heartbeats ({_STORED})
    SELECT {_STORED}
    FROM mine ORDER BY device_id, bucket_start
    ON CONFLICT (device_id, bucket_start) DO NOTHING
    RETURNING device_id
), upd AS (
    UPDATE devices d SET {_SUMMARY}
    FROM mine LEFT JOIN ins ON ins.device_id = mine.device_id
    WHERE d.id = mine.device_id
      AND (ins.device_id IS NOT NULL
           OR (mine.fcm_token IS NOT NULL
               AND (d.fcm_token IS DISTINCT FROM mine.fcm_token OR d.fcm_token_dead_at IS NOT NULL)))
    RETURNING d.id
)
SELECT dev.idx, dev.device_id, EXISTS (SELECT 1 FROM ins WHERE ins.device_id = dev.device_id) AS created,
       dev.held_inventory, dev.held_profile
FROM dev
"""

_COLUMNS = tuple(name for name in _BEAT_TYPES if name != "idx")
#: attempts of a batch that met a deadlock (possible only when one device beats through two processes at once)
_DEADLOCK_ATTEMPTS = 3
_DEADLOCK = "40P01"


@dataclass(frozen=True, slots=True)
class Beat:
    """A validated heartbeat, ready to store: everything the statement needs, the token only as its hash."""

    token_hash: str
    claimed: str | None
    received_at: datetime
    bucket_start: datetime
    status: str | None
    battery_pct: int | None
    plugged: bool | None
    network_type: str | None
    agent_version: str | None
    fcm_token: str | None
    #: ``core.base.versions.version_key`` of ``agent_version``, kept on the device for selectors
    agent_version_key: str | None = None
    #: the hash of the inventory the device holds (``core.inventory``), compared with the server's
    inventory_hash: str | None = None


def prepare_beat(
    token: str, heartbeat_data: dict[str, Any], settings: Settings, received_at: datetime | None = None
) -> Beat:
    """Validate a heartbeat and fix its bucket (server receive time); raises ``InvalidArgument``."""
    fields = validate_heartbeat_data(heartbeat_data)
    claimed = heartbeat_data.get("device_id")
    if claimed is not None:
        validation.device_id(claimed)
    fcm_token = validation.text(heartbeat_data.get("fcm_token"), "fcm_token", max_length=4096) or None
    received = received_at or utcnow()
    return Beat(
        token_hash=security.hash_secret(token),
        claimed=claimed,
        received_at=received,
        bucket_start=bucket_floor(received, settings.heartbeat_bucket_seconds),
        status=fields["status"],
        battery_pct=fields["battery_pct"],
        plugged=fields["plugged"],
        network_type=fields["network_type"],
        agent_version=fields["agent_version"] or None,  # "" is "not reported", as on SQLite
        fcm_token=fcm_token,
        agent_version_key=version_key(fields["agent_version"] or None),
        inventory_hash=_inventory_hash(heartbeat_data.get("inventory_hash")),
    )


def _inventory_hash(value: object) -> str | None:
    return None if value is None else validation.sha256_hex(value, "inventory_hash")


def inventory_wanted(sent: str | None, held: str | None) -> bool:
    """The answer asks for the inventory when the server holds none, or another one than the device's."""
    return held is None or sent != held


def store_beats(
    conn: Connection,
    beats: Sequence[Beat],
    settings: Settings,
    *,
    timeouts_ms: tuple[int, int] | None = None,
) -> list[dict[str, Any] | NexMDMError]:
    """Store many beats in one statement on PostgreSQL (at most one per token); one outcome per beat.

    ``timeouts_ms`` = ``(lock_timeout, statement_timeout)`` bounds the statement: sent in the same query
    string as ``SET LOCAL``, which PostgreSQL runs as one implicit transaction, so the limits hold for
    this statement only (no session state: safe through PgBouncer in transaction mode) at no extra
    round trip.

    An outcome is ``{"device_id", "created", "bucket_start"}``, or the ``InvalidCredentials`` /
    ``Forbidden`` that beat earned (nothing of it is written). Database errors raise: then nothing of
    the batch was written (one statement). ``conn`` should be in autocommit, or the caller commits.
    """
    if len({b.token_hash for b in beats}) != len(beats):
        raise ValueError("store_beats takes at most one beat per token")
    started = time.perf_counter()
    for day_start in {b.bucket_start for b in beats}:
        partitions.ensure_for(conn, day_start)
    params: dict[str, list[Any]] = {"idx": list(range(len(beats)))}
    for column in _COLUMNS:
        params[column] = [getattr(b, column) for b in beats]
    # a statement that lost a deadlock, or met a partition another process dropped from under the cache,
    # wrote nothing; in autocommit it can simply run again
    retry = getattr(conn.connection.dbapi_connection, "autocommit", False)
    statement = _MANY
    if timeouts_ms is not None:
        lock_ms, statement_ms = (int(t) for t in timeouts_ms)
        statement = f"SET LOCAL lock_timeout = {lock_ms}; SET LOCAL statement_timeout = {statement_ms}; {_MANY}"
    for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
        try:
            rows = conn.exec_driver_sql(statement, params).all()
            break
        except (OperationalError, IntegrityError) as exc:
            missing = partitions.forget_if_missing(exc, conn.engine)
            deadlock = getattr(exc.orig, "pgcode", None) == _DEADLOCK
            if not retry or not (missing or deadlock) or attempt == _DEADLOCK_ATTEMPTS:
                raise
            conn.rollback()  # SQLAlchemy's bookkeeping only: the DBAPI connection is in autocommit
            for day_start in {b.bucket_start for b in beats}:
                partitions.ensure_for(conn, day_start)
    found = {row.idx: row for row in rows}
    outcomes: list[dict[str, Any] | NexMDMError] = []
    slow = (time.perf_counter() - started) * 1000 > settings.slow_heartbeat_ms
    for i, beat in enumerate(beats):
        row = found.get(i)
        if row is None:
            outcomes.append(InvalidCredentials("invalid device token"))
            continue
        if beat.claimed is not None and beat.claimed != row.device_id:
            outcomes.append(Forbidden("device_id is not the device this token belongs to"))
            continue
        log_operation(
            "create" if row.created else "dedup_hit",
            "device_heartbeats",
            {"device_id": row.device_id},
            started,
            level=logging.WARNING if slow else logging.INFO,
        )
        outcomes.append(
            {
                "device_id": row.device_id,
                "created": bool(row.created),
                "bucket_start": beat.bucket_start,
                "inventory_wanted": inventory_wanted(beat.inventory_hash, row.held_inventory),
                "profile": row.held_profile,
            }
        )
    return outcomes


def record_heartbeat_for_token(
    db: Session,
    *,
    token: str,
    heartbeat_data: dict[str, Any],
    settings: Settings,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """Store a heartbeat for the device a token belongs to.

    Returns ``{"device_id", "created", "bucket_start", "inventory_wanted", "profile"}`` (``profile``: the
    device's effective profile hash, ``None`` when no profile matches it). Raises ``InvalidCredentials``
    for an unknown or revoked token and ``Forbidden`` when ``heartbeat_data["device_id"]`` names another
    device; neither writes anything.
    """
    beat = prepare_beat(token, heartbeat_data, settings, received_at)
    if not is_postgresql(db):  # no round trip to save: the helpers' path
        device = authenticate_device(db, token)
        if beat.claimed is not None and beat.claimed != device.id:
            raise Forbidden("device_id is not the device this token belongs to")
        # read with the device: the inventory comparison and the profile hash cost no statement
        held, profile = device.inventory_hash, device.effective_hash
        result = record_device_heartbeat(db, device, dict(heartbeat_data), settings, received_at=beat.received_at)
        return {
            "device_id": device.id,
            "created": result["created"],
            "bucket_start": result["bucket_start"],
            "inventory_wanted": inventory_wanted(beat.inventory_hash, held),
            "profile": profile,
        }
    (outcome,) = store_beats(db.connection(), [beat], settings)
    if isinstance(outcome, NexMDMError):
        raise outcome
    return outcome


def record_device_heartbeat(
    db: Session,
    device: Device,
    heartbeat_data: dict[str, Any],
    settings: Settings,
    *,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """Store a heartbeat with the seed's helper and move the device's summary by the rule above.

    A heartbeat carrying ``fcm_token`` updates the device's token (and revives a dead one) either way.
    Returns the helper's result.
    """
    result = record_heartbeat_with_bucketing(
        db,
        device_id=device.id,
        heartbeat_data=heartbeat_data,
        bucket_seconds=settings.heartbeat_bucket_seconds,
        received_at=received_at,
    )
    fcm_token = validation.text(heartbeat_data.get("fcm_token"), "fcm_token", max_length=4096) or None
    new_token = fcm_token is not None and (fcm_token != device.fcm_token or device.fcm_token_dead_at is not None)
    if result["created"] or new_token:
        beat = result["heartbeat"]
        params = {
            "device_id": device.id,
            "created": bool(result["created"]),
            "received_at": beat["received_at"],
            **{name: beat[name] for name in STORED_FIELDS},
            "agent_version": beat["agent_version"] or None,  # "" is "not reported"
            "fcm_token": fcm_token,
            "agent_version_key": version_key(beat["agent_version"] or None),
            "inventory_hash": _inventory_hash(heartbeat_data.get("inventory_hash")),
        }
        db.execute(_ONE_BY_DIALECT[name_of(db)], params)
    return result
