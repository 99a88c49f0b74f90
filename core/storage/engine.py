"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from core.base.settings import Settings, normalize_database_url

if TYPE_CHECKING:  # the ORM is imported by make_session_factory: `nexmdm devices list` runs without it
    from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str,
    *,
    busy_timeout_ms: int = 30000,
    pool_size: int = 10,
    sqlite_foreign_keys: bool = True,
    **kwargs: Any,
) -> Engine:
    """Create an engine; nothing connects until the first query.

    SQLite runs in WAL mode with foreign keys on and a busy timeout, and every transaction starts with
    ``BEGIN IMMEDIATE`` so that concurrent writers queue on the lock instead of failing with
    "database is locked" when a read transaction tries to upgrade. Pass the execution option
    ``sqlite_begin="DEFERRED"`` for a long read-only transaction. On PostgreSQL a pooled connection that
    sat idle for ``PING_AFTER_IDLE_SECONDS`` is checked with a round trip before use (``_ping_when_idle``),
    so a server restarted while the pool was quiet costs one failed check, not a failed request.
    """
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            private_dir(path.parent)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms, foreign_keys=sqlite_foreign_keys, path=path)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", pool_size)
        kwargs.setdefault("connect_args", {"connect_timeout": 5, "application_name": "nexmdm"})
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    if parsed.get_backend_name() == "postgresql":
        from core.storage.failover import drop_connections_on_failover

        drop_connections_on_failover(engine)
    return engine


#: a pooled connection idle longer than this is pinged before use; a busier one is used as it is
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "nexmdm_idle_since"


def _ping_when_idle(engine: Engine) -> None:
    """Pre-ping only connections that sat idle in the pool (SQLAlchemy's custom pessimistic handling).

    ``pool_pre_ping`` costs a round trip at every checkout, as much as the statement itself on the hot
    paths. A connection in steady use has just proven itself; one that sat idle may have been cut by a
    restart, a failover or a proxy, and is checked first. A dead one raises ``DisconnectionError``, on
    which the pool discards it and checks out another (a fresh connection when the server restarted).
    A restart that falls inside the idle window surfaces as one failed statement, after which SQLAlchemy
    invalidates the whole pool (every connection older than the failure is replaced on checkout).
    """
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # new (just connected) or in steady use
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(str(exc)) from exc
            raise


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if missing; the folder NexMDM creates is 0700: it holds command
    payloads, FCM tokens and APKs. A folder that already exists keeps its mode (the operator chose it)."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)


def private_file(path: Path | None) -> None:
    """Make the SQLite database file 0600 (owner only). SQLite creates its ``-wal`` and ``-shm`` files with
    the database file's mode, so they follow; ones left by an older version are tightened too."""
    if path is None:
        return
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if name.stat().st_mode & 0o077:
                os.chmod(name, 0o600)
        except OSError:  # missing (no WAL yet), or not ours: SQLite reports real problems itself
            continue


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int, foreign_keys: bool, path: Path | None = None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # before journal_mode=WAL creates the -wal and -shm files, which take the database file's mode
        private_file(path)
        # Let SQLAlchemy, not the driver, decide where transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()
        # PostgreSQL has md5(); campaigns assign waves by it (core.campaigns.records), so SQLite gets one too
        dbapi_connection.create_function("md5", 1, _md5, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
            raise ValueError(f"unknown sqlite_begin mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _md5(value: str | None) -> str | None:
    return None if value is None else hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()


#: execution option marking an engine whose connections go through a transaction-pooling PgBouncer
TRANSACTION_POOLING = "nexmdm_transaction_pooling"


def transaction_pooled(bind: Any) -> bool:
    """Does ``bind`` (an engine or connection) go through PgBouncer in transaction mode?

    Then nothing may rely on session state: consecutive transactions of one client can run on different
    server connections, and a session setting would stay on the server connection for its next client.
    """
    return bool(bind.get_execution_options().get(TRANSACTION_POOLING))


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    if settings.database_pool_mode == "transaction" and not settings.is_sqlite:
        kwargs["execution_options"] = {**kwargs.get("execution_options", {}), TRANSACTION_POOLING: True}
    return make_engine(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.db_pool_size,
        **kwargs,
    )


def make_session_factory(engine: Engine, settings: Settings | None = None) -> sessionmaker[Session]:
    """Sessions that carry their settings in ``session.info`` (the helpers read thresholds there)."""
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(bind=engine, expire_on_commit=False, info={"settings": settings} if settings else None)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL, in-memory or ``file:`` URI databases)."""
    parsed = make_url(normalize_database_url(url))
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


#: query parameters that carry a secret (libpq takes ``?password=`` as well as ``user:password@``)
_SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})


def mask_url(url: str) -> str:
    """The URL with its password hidden (in the user part and in the query), for messages to operators."""
    parsed = make_url(normalize_database_url(url))
    if any(key.lower() in _SECRET_QUERY_KEYS for key in parsed.query):
        parsed = parsed.update_query_dict(
            {key: "***" for key in parsed.query if key.lower() in _SECRET_QUERY_KEYS}, append=False
        )
    return parsed.render_as_string(hide_password=True)
