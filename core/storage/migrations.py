"""Alembic, driven through its Python API from any folder (the CLI and the tests use this)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from core.base.settings import normalize_database_url
from core.storage.dialect import is_postgresql
from core.storage.schema_version import script_location as script_location  # re-exported (tests patch it here)


def alembic_config(database_url: str, *, lock_timeout_ms: int | None = None) -> Config:
    """Alembic's config for ``database_url``; ``lock_timeout_ms`` (PostgreSQL) overrides the setting."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    if lock_timeout_ms is not None:
        cfg.attributes["lock_timeout_ms"] = lock_timeout_ms
    return cfg


def head_revision(database_url: str = "sqlite://") -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` when it has never been migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def partition_names(conn: Connection) -> set[str]:
    """Tables that are partitions (children of a partitioned table) on PostgreSQL."""
    if not is_postgresql(conn):
        return set()
    rows = conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"))
    return set(rows.scalars())


def compare_options(conn: Connection) -> dict[str, Any]:
    """Options for autogenerate and schema comparison: types compared, partitions ignored."""
    skipped = partition_names(conn)

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and reflected and compare_to is None and name in skipped)

    return {"compare_type": True, "include_object": include_object}


# --- migrating beside live traffic (PostgreSQL) ---------------------------------------------------------------

logger = logging.getLogger("nexmdm.migrations")

#: SQLSTATE of "canceling statement due to lock timeout" (lock_not_available)
LOCK_NOT_AVAILABLE = "55P03"
MAX_BACKOFF_SECONDS = 30.0

T = TypeVar("T")


def is_lock_timeout(exc: BaseException) -> bool:
    """Did PostgreSQL give up waiting for a lock (``lock_timeout``)?"""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE


def retry_on_lock_timeout(
    fn: Callable[[], T],
    *,
    retries: int,
    backoff_seconds: float,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; when it fails on a lock timeout, wait (doubling, with jitter) and call it again.

    A migration that waits for a lock holds its place in PostgreSQL's lock queue, and every later
    statement on that table (the heartbeat path's inserts and updates) waits behind it. ``lock_timeout``
    bounds that wait; this loop turns "gave up" into "try again shortly" (each Alembic migration is its
    own transaction, so a retry resumes at the migration that timed out). ``on_retry(attempt, delay, exc)``
    is called before each pause. Other errors, and the last lock timeout, propagate.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except DBAPIError as exc:
            if not is_lock_timeout(exc) or attempt > retries:
                raise
            delay = min(backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)  # noqa: S311
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            else:
                logger.warning("migration attempt %d hit the lock timeout; retrying in %.1f s", attempt, delay)
            sleep(delay)


def create_index_concurrently(
    index_name: str, table_name: str, columns: Sequence[str], *, unique: bool = False, **kw: Any
) -> None:
    """``op.create_index`` that never blocks writers on PostgreSQL; use it in migrations for big tables.

    On PostgreSQL, ``CREATE INDEX CONCURRENTLY`` in an autocommit block (it cannot run in a transaction,
    so the migration's earlier steps are committed first: keep it last, or alone, in its migration). It
    takes a lock that conflicts with no insert, update or delete, so nothing queues behind it; it waits
    for older transactions to finish instead, with no ``lock_timeout`` (an index left half-built by a
    timeout would be INVALID). A leftover INVALID index of the same name (an earlier run was
    interrupted) is dropped first, so a rerun is safe. A partitioned table (``device_heartbeats``)
    gets an index ``ON ONLY`` the parent, each partition's index built concurrently and attached.
    Elsewhere (SQLite) it is a plain ``create_index`` in a batch.
    """
    from alembic import op

    bind = op.get_bind()
    if not is_postgresql(bind):
        with op.batch_alter_table(table_name) as batch:
            batch.create_index(index_name, list(columns), unique=unique, **kw)
        return
    with op.get_context().autocommit_block():
        conn = op.get_bind()
        partitioned = conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
                "WHERE c.relname = :t AND pg_table_is_visible(c.oid))"
            ),
            {"t": table_name},
        ).scalar_one()
        if not partitioned:
            _build_concurrently(conn, index_name, table_name, columns, unique=unique, **kw)
            return
        # catalog only (the parent holds no rows), under the migration's lock_timeout
        if kw:
            raise TypeError(f"options {sorted(kw)} are not supported for a partitioned table")
        cols = ", ".join(f'"{c}"' for c in columns)
        kind = "UNIQUE INDEX" if unique else "INDEX"
        conn.execute(text(f'CREATE {kind} IF NOT EXISTS "{index_name}" ON ONLY "{table_name}" ({cols})'))
        children = (
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :t AND pg_table_is_visible(p.oid) "
                    "ORDER BY c.relname"
                ),
                {"t": table_name},
            )
            .scalars()
            .all()
        )
        for child in children:
            child_index = _child_index_name(index_name, child)
            _build_concurrently(conn, child_index, child, columns, unique=unique, **kw)
            attached = conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE c.relname = :c AND p.relname = :p)"
                ),
                {"c": child_index, "p": index_name},
            ).scalar_one()
            if not attached:
                conn.execute(text(f'ALTER INDEX "{index_name}" ATTACH PARTITION "{child_index}"'))


def drop_index_concurrently(index_name: str, table_name: str) -> None:
    """``op.drop_index`` without an ACCESS EXCLUSIVE lock on PostgreSQL (plain tables; SQLite: batch)."""
    from alembic import op

    if not is_postgresql(op):
        with op.batch_alter_table(table_name) as batch:
            batch.drop_index(index_name)
        return
    with op.get_context().autocommit_block():
        op.drop_index(index_name, table_name=table_name, postgresql_concurrently=True, if_exists=True)


def _build_concurrently(conn: Connection, index_name: str, table_name: str, columns: Sequence[str], **kw: Any) -> None:
    from alembic import op

    valid = conn.execute(
        text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :n AND pg_table_is_visible(c.oid)"
        ),
        {"n": index_name},
    ).scalar_one_or_none()
    from core.storage.engine import transaction_pooled

    session = not transaction_pooled(conn)  # through PgBouncer (transaction mode) no session setting is made
    if session:
        conn.execute(text("SET lock_timeout = 0"))  # see create_index_concurrently: waiting here blocks nobody
    try:
        if valid is False:
            conn.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{index_name}"'))
        op.create_index(index_name, table_name, list(columns), postgresql_concurrently=True, if_not_exists=True, **kw)
    finally:
        if session:
            conn.execute(text("RESET lock_timeout"))  # back to the session's (the migration's) lock_timeout


def _child_index_name(index_name: str, partition: str) -> str:
    suffix = partition.rsplit("_", 1)[-1]  # device_heartbeats_p20260101 -> p20260101
    return f"{index_name[: 62 - len(suffix)]}_{suffix}"
