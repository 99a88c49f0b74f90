"""The database for the API: engine on ``app.state`` (built in the lifespan), one session per request.

The framework owns the transaction: the ``db`` dependency commits after a handler returns and rolls back
when anything raised, whatever the handler did. Handlers never commit.

The engine is made for an API: a short PostgreSQL connect timeout and pool timeout, so an unreachable
database is a 503 within a couple of seconds, never a hang. On SQLite, read-only endpoints (handlers
with ``opt={"readonly": True}``) begin ``DEFERRED`` so that they never wait for the write lock.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from litestar import Litestar, Request
from litestar.di import NamedDependency
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import DatabaseUnavailable
from core.base.settings import Settings
from core.storage.engine import engine_from_settings, make_session_factory
from core.storage.replica import ReadRouter, replica_engine
from nexmdm_api.auth import confirm_admin
from nexmdm_api.heartbeat_writer import HeartbeatWriter

#: seconds to wait for a PostgreSQL connection to open, or for a free connection in the pool
CONNECT_TIMEOUT_SECONDS = 2
POOL_TIMEOUT_SECONDS = 5


#: commits (and rollbacks) in flight at once per process; more than the pool can have open
COMMIT_THREADS = 64

#: longest a request waits for SQLite's write lock before it is a 503
SQLITE_WRITE_WAIT_SECONDS = 10.0


def serialize_sqlite_writers(engine: Engine, timeout: float) -> None:
    """Queue this process's SQLite write transactions on a Python lock.

    SQLite lets one writer in at a time; the others poll with growing sleeps (up to 100 ms) in its busy
    handler, which under a few dozen concurrent heartbeats turns a 1 ms insert into a 200 ms wait. A
    lock taken before ``BEGIN IMMEDIATE`` and released when the connection goes back to the pool (after
    its commit or rollback) wakes the next writer at once. Read-only (``DEFERRED``) transactions skip it.
    Other processes (more workers, the CLI) still meet SQLite's own busy handler.
    """
    lock = threading.Lock()

    @event.listens_for(engine, "begin", insert=True)
    def _acquire(conn: Any) -> None:
        if conn.get_execution_options().get("sqlite_begin", "IMMEDIATE") == "DEFERRED":
            return
        record = conn.connection._connection_record
        if record is None or record.info.get(_HOLDS_LOCK):
            return
        if not lock.acquire(timeout=timeout):
            raise DatabaseUnavailable("the database is busy: no write slot became free in time")
        record.info[_HOLDS_LOCK] = True

    @event.listens_for(engine.pool, "checkin")
    def _release(_dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_HOLDS_LOCK, False):
            lock.release()


_HOLDS_LOCK = "nexmdm_holds_write_lock"


@dataclass
class Database:
    engine: Engine
    read_engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    #: single-statement endpoints (the heartbeat) on PostgreSQL: no BEGIN/COMMIT round trips
    autocommit_sessions: sessionmaker[Session]
    #: admin listings: the replica (``NEXMDM_DATABASE_READ_URL``) while it is close enough behind, else the primary
    reads: ReadRouter | None = None
    #: worker-thread slots for commits, separate from the handlers' (see ``provide_db``)
    commit_limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(COMMIT_THREADS))


def open_database(settings: Settings) -> Database:
    kwargs: dict[str, Any] = {}
    if not settings.is_sqlite:
        kwargs = {
            "connect_args": {
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": "nexmdm-api",
                # a connection cut without a reset (a NAT or load balancer timing out) is noticed within
                # a minute idle and 15 s busy, instead of the kernel's default quarter of an hour
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                "tcp_user_timeout": 15_000,
            },
            "pool_timeout": POOL_TIMEOUT_SECONDS,
        }
    engine = engine_from_settings(settings, **kwargs)
    if settings.is_sqlite:
        serialize_sqlite_writers(engine, min(settings.sqlite_busy_timeout_ms / 1000, SQLITE_WRITE_WAIT_SECONDS))
    read_engine = engine.execution_options(sqlite_begin="DEFERRED") if settings.is_sqlite else engine
    # a pool of its own: switching a pooled connection's isolation level at every checkout costs round trips
    # on PostgreSQL it is the heartbeat writer's alone (its statements carry their own lock and statement limits)
    autocommit_engine = (
        engine if settings.is_sqlite else engine_from_settings(settings, isolation_level="AUTOCOMMIT", **kwargs)
    )
    sessions = make_session_factory(engine, settings)
    replica = None
    if settings.database_read_url and not settings.is_sqlite:
        replica = make_session_factory(
            replica_engine(
                settings.database_read_url, pool_size=settings.db_pool_size, pool_timeout=POOL_TIMEOUT_SECONDS
            ),
            settings,
        )
    return Database(
        engine,
        read_engine,
        sessions,
        make_session_factory(read_engine, settings),
        make_session_factory(autocommit_engine, settings),
        reads=ReadRouter(sessions, replica, max_lag_seconds=settings.database_read_max_lag_seconds),
    )


def database_lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database = open_database(settings)
        app.state.db = database
        writer = None
        if not settings.is_sqlite:
            writer = app.state.heartbeat_writer = HeartbeatWriter(database.autocommit_sessions.kw["bind"], settings)
            writer.start()
        try:
            yield
        finally:
            if writer is not None:
                writer.stop()
            database.engine.dispose()
            database.autocommit_sessions.kw["bind"].dispose()
            if database.reads is not None and database.reads.replica is not None:
                database.reads.replica.kw["bind"].dispose()

    return lifespan


async def provide_db(request: Request[Any, Any, Any]) -> AsyncIterator[Session]:
    """A session per request: committed when the handler returned, rolled back when anything raised.

    The commit (or rollback) runs in a worker thread under its own capacity limiter, never on the event
    loop (a PostgreSQL commit waits for the WAL flush) and never in a slot of the handlers' limiter:
    Litestar runs a sync generator's cleanup in a handler slot, and a transaction holding SQLite's write
    lock (or PostgreSQL row locks) while it waits for a slot deadlocks against the handlers that hold all
    the slots while waiting for that lock. Commits never wait for locks, so their own slots always free up.
    """
    database: Database = request.app.state.db
    opt = request.route_handler.opt
    if opt.get("replica") and database.reads is not None:  # the replica unless it lags too far or is down
        route = request.state.read_route = await anyio.to_thread.run_sync(database.reads.route)
        factory = database.reads.sessions(route) if route.source == "replica" else database.read_sessions
    elif opt.get("readonly"):
        factory = database.read_sessions
    elif opt.get("autocommit"):
        factory = database.autocommit_sessions
    else:
        factory = database.sessions
    session = factory()
    if opt.get("auth") == "admin" and not opt.get("readonly"):
        # the key again, first in the transaction that writes: the body may have come long after the guard
        event.listen(session, "after_begin", lambda _s, _t, connection: confirm_admin(request, connection))
    if database.reads is not None and factory is database.reads.replica:
        session.info["replica"] = True  # credentials are still checked on the primary (nexmdm_api.auth)
    try:
        yield session
    except BaseException:
        await _finish(session, database, commit=False)
        raise
    await _finish(session, database, commit=True)


async def _finish(session: Session, database: Database, *, commit: bool) -> None:
    if session.get_transaction() is None:  # never touched the database: nothing to send
        session.close()
        return

    def finish() -> None:
        try:
            if commit:
                session.commit()
        finally:
            session.close()  # rolls back whatever was not committed

    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(finish, limiter=database.commit_limiter)


#: how handlers ask for the request's session
DB = NamedDependency[Session]
