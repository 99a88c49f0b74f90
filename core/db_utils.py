"""Persistence helpers: the seed's API (see ``shared/CONTRACT.md``, "Persistence helpers").

Each takes a SQLAlchemy ``Session`` first, returns a plain dict and logs one ``db_operation`` line on
the ``nexmdm.db`` logger. Idempotency and deduplication are one ``INSERT ... ON CONFLICT`` statement
against the table's unique key on both databases: no select-then-insert races. The helpers never
commit; the caller owns the transaction. The one exception is a real (not dry) retention cleanup, which
commits after every bounded batch so that it never holds a long lock. Each helper lives with its domain
and is re-exported here, the seed's import path: ``core.commands.records``, ``core.heartbeats.bucketing``
and ``core.heartbeats.validate``, ``core.apk.downloads`` and the cleanups of ``core.ops.retention``.

When a helper raises :class:`core.base.errors.NotFound` for an unknown device or build, the database has
refused the row (a foreign key); on PostgreSQL the caller's transaction must then be rolled back.
"""

from core.apk.downloads import record_apk_download
from core.commands.records import record_fcm_dispatch
from core.heartbeats.bucketing import bucket_floor, record_heartbeat_with_bucketing
from core.heartbeats.validate import validate_heartbeat_data
from core.ops.retention import (
    CLEANUP_ENTITIES,
    cleanup_old_apk_download_events,
    cleanup_old_fcm_dispatches,
    cleanup_old_heartbeats,
    run_all_retention_cleanups,
)
from core.storage.operations import log_operation, logger, session_settings

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
