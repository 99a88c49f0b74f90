"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, normalize_database_url


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
    ``sqlite_begin="DEFERRED"`` for a long read-only transaction. PostgreSQL uses pre-ping so a
    restarted server costs one failed check, not a failed request.
    """
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            from pathlib import Path

            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms, foreign_keys=sqlite_foreign_keys)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", pool_size)
        kwargs.setdefault("connect_args", {"connect_timeout": 5, "application_name": "nexmdm"})
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
            raise ValueError(f"unknown sqlite_begin mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    return make_engine(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.db_pool_size,
        **kwargs,
    )


def make_session_factory(engine: Engine, settings: Settings | None = None) -> sessionmaker[Session]:
    """Sessions that carry their settings in ``session.info`` (the helpers read thresholds there)."""
    return sessionmaker(bind=engine, expire_on_commit=False, info={"settings": settings} if settings else None)


def mask_url(url: str) -> str:
    """The URL with its password hidden, for messages to operators."""
    return make_url(normalize_database_url(url)).render_as_string(hide_password=True)
