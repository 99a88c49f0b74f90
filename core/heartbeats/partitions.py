"""Daily range partitions of ``device_heartbeats`` on PostgreSQL (SQLite keeps a plain table).

Partition ``device_heartbeats_pYYYYMMDD`` holds ``[day 00:00 UTC, next day 00:00 UTC)`` of
``bucket_start``. There is no DEFAULT partition (it would forbid ``DETACH ... CONCURRENTLY``), so a
partition must exist before a row for its day arrives: the migration, ``nexmdm serve`` (at start and then
daily) and ``nexmdm cleanup`` create the coming days ahead, and the heartbeat helper creates a missing
one for a backfill or a clock far off. Expired partitions are detached, then dropped: retention in
O(partitions), with no VACUUM afterwards.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.orm import Session

from core.storage.dialect import is_postgresql
from core.storage.engine import transaction_pooled

TABLE = "device_heartbeats"
AHEAD_DAYS = 7
_NAME_RE = re.compile(rf"{TABLE}_p(\d{{8}})")

#: days known to have a partition, per engine (saves a catalog look-up on the hot path)
_known: weakref.WeakKeyDictionary[Engine, set[date]] = weakref.WeakKeyDictionary()
#: days ensured inside a connection's open transaction, not yet committed
_pending: weakref.WeakKeyDictionary[Connection, set[date]] = weakref.WeakKeyDictionary()


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def _bounds(day: date) -> tuple[str, str]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def is_partitioned(conn: Connection) -> bool:
    if not is_postgresql(conn):
        return False
    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
                "WHERE c.relname = :t AND pg_table_is_visible(c.oid))"
            ),
            {"t": TABLE},
        ).scalar_one()
    )


def _by_day(names: Iterable[str]) -> dict[date, str]:
    """Our day tables among ``names``, by the day their name carries."""
    found = {}
    for name in names:
        match = _NAME_RE.fullmatch(name)
        if match:
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = name  # a date only: no time zone
    return found


def existing_partitions(conn: Connection) -> dict[date, str]:
    """Our daily partitions, by day."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :t AND pg_table_is_visible(p.oid)"
        ),
        {"t": TABLE},
    ).scalars()
    return _by_day(rows)


def create_partitions(conn: Connection, days: list[date]) -> list[str]:
    """Create the partitions for ``days`` that are missing; returns the names created.

    Serialized by a transaction-level advisory lock so that two processes creating the same day do
    not collide in the catalog.
    """
    if not days or not is_partitioned(conn):
        return []
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('nexmdm:heartbeat-partitions'))"))
    existing = existing_partitions(conn)
    created = []
    for day in sorted(set(days) - set(existing)):
        low, high = _bounds(day)
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ('{low}') TO ('{high}')"
            )
        )
        created.append(partition_name(day))
    return created


def ensure_ahead(conn: Connection, *, today: date | None = None, ahead: int = AHEAD_DAYS) -> list[str]:
    """Partitions for today and the coming ``ahead`` days (beats carry the server's receive time)."""
    today = today or datetime.now(UTC).date()
    return create_partitions(conn, [today + timedelta(days=i) for i in range(ahead + 1)])


def ensure_for(db: Session | Connection, moment: datetime) -> None:
    """Make sure the partition for ``moment``'s day exists (cheap when it is already known)."""
    bind = db.engine if isinstance(db, Connection) else db.get_bind()
    if not is_postgresql(bind):
        return
    engine = bind if isinstance(bind, Engine) else bind.engine
    known = _known.setdefault(engine, set())
    day = moment.astimezone(UTC).date()
    if day in known:
        return
    conn = db if isinstance(db, Connection) else db.connection()
    autocommit = getattr(conn.connection.dbapi_connection, "autocommit", False)
    pending = None if autocommit else _pending_days(conn, known)
    if pending is not None and day in pending:
        return
    if is_partitioned(conn) and day not in existing_partitions(conn):
        if autocommit:
            # the advisory lock in create_partitions must hold until the CREATE commits, which it would
            # not in an autocommit session: use a short transaction of its own (this session holds no locks)
            with engine.connect() as own:
                own.execution_options(isolation_level="READ COMMITTED")  # the engine may be autocommit
                with own.begin():
                    create_partitions(own, [day])
        else:
            # inside the caller's transaction (another connection would wait for the locks it holds)
            create_partitions(conn, [day])
    if pending is not None:
        # this transaction may see its own uncommitted partition (made here or by an earlier call): the
        # day is known for good only once it commits, as a rollback takes the partition with it
        pending.add(day)
        return
    known.add(day)


def _pending_days(conn: Connection, known: set[date]) -> set[date]:
    """Days ensured inside ``conn``'s current transaction; moved to ``known`` when it commits, dropped when
    it (or a savepoint) rolls back."""
    pending = _pending.get(conn)
    if pending is None:
        pending = _pending[conn] = set()

        def on_commit(_conn: Connection) -> None:
            known.update(pending)
            pending.clear()

        def on_rollback(_conn: Connection, *_args: object) -> None:
            pending.clear()

        event.listen(conn, "commit", on_commit)
        event.listen(conn, "rollback", on_rollback)
        event.listen(conn, "rollback_savepoint", on_rollback)
    return pending


def forget(engine: Engine) -> None:
    """Drop the cache of known partitions (after partitions were dropped)."""
    _known.pop(engine, None)


#: SQLSTATE of "no partition of relation ... found for row" (a check_violation)
NO_PARTITION = "23514"


def forget_if_missing(exc: BaseException, engine: Engine) -> bool:
    """After a failed insert: when the row's partition was missing although the cache knew its day (another
    process dropped it, or the COMMIT that created it failed), drop the cache so the next attempt creates it.
    Returns whether that was the failure."""
    if getattr(getattr(exc, "orig", None), "pgcode", None) != NO_PARTITION:
        return False
    forget(engine)
    return True


def detached_leftovers(conn: Connection) -> dict[date, str]:
    """Day tables that are no longer partitions: detached by a cleanup whose ``DROP`` then gave up."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid) "
            "AND c.relname LIKE :pattern AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
        ),
        {"pattern": TABLE.replace("_", "\\_") + "\\_p%"},
    ).scalars()
    return _by_day(rows)


def expired_partitions(conn: Connection, cutoff: datetime) -> list[tuple[date, str]]:
    """Partitions whose whole range lies before ``cutoff``, and detached leftovers of such days."""
    candidates = {**detached_leftovers(conn), **existing_partitions(conn)}
    return sorted(
        (day, name)
        for day, name in candidates.items()
        if datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) <= cutoff
    )


def _detach_pending(conn: Connection, name: str) -> bool | None:
    return conn.execute(
        text("SELECT i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname = :n"),
        {"n": name},
    ).scalar_one_or_none()


def _drop_pooled(engine: Engine, name: str, *, lock_timeout_ms: int, statement_timeout_ms: int | None) -> None:
    """``drop_partition`` through PgBouncer in transaction mode: no session settings.

    The detach runs alone in autocommit under the server's default limits (its lock conflicts with no
    insert, update or delete, so nothing queues behind it while it waits); the drop of the detached
    table, which nothing else uses any more, is a transaction of its own with ``SET LOCAL`` limits.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        pending = _detach_pending(conn, name)
        if pending:
            conn.execute(text(f"ALTER TABLE {TABLE} DETACH PARTITION {name} FINALIZE"))
        elif pending is not None:
            conn.execute(text(f"ALTER TABLE {TABLE} DETACH PARTITION {name} CONCURRENTLY"))
    with engine.begin() as conn:
        conn.execute(
            text("SELECT set_config('lock_timeout', :lock, true), set_config('statement_timeout', :statement, true)"),
            {"lock": f"{int(lock_timeout_ms)}ms", "statement": f"{int(statement_timeout_ms or 0)}ms"},
        )
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def drop_partition(
    engine: Engine, name: str, *, lock_timeout_ms: int = 5000, statement_timeout_ms: int | None = None
) -> None:
    """Detach a partition concurrently (no long lock on the parent), then drop it.

    ``DETACH ... CONCURRENTLY`` cannot run inside a transaction block, so this uses its own autocommit
    connection, with ``lock_timeout`` (and ``statement_timeout``) set for its session and reset before
    the connection goes back to the pool. A detach interrupted half-way (by a timeout, say) is finished
    with ``FINALIZE`` on the next call; a table already detached is only dropped.
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"not a heartbeat partition: {name}")
    if transaction_pooled(engine):
        _drop_pooled(engine, name, lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=statement_timeout_ms)
        forget(engine)
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"SET lock_timeout = {int(lock_timeout_ms)}"))
        if statement_timeout_ms is not None:
            conn.execute(text(f"SET statement_timeout = {int(statement_timeout_ms)}"))
        try:
            pending = _detach_pending(conn, name)
            if pending:
                conn.execute(text(f"ALTER TABLE {TABLE} DETACH PARTITION {name} FINALIZE"))
            elif pending is not None:
                conn.execute(text(f"ALTER TABLE {TABLE} DETACH PARTITION {name} CONCURRENTLY"))
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        finally:
            if not conn.invalidated:  # session settings would outlive this call in the pool
                conn.execute(text("RESET lock_timeout"))
                conn.execute(text("RESET statement_timeout"))
    forget(engine)
