"""The database for the API: engine on ``app.state`` (built in the lifespan), one session per request.

The framework owns the transaction: the ``db`` dependency commits after a handler returns and rolls back
when anything raised, whatever the handler did. Handlers never commit.

The engine is made for an API: a short PostgreSQL connect timeout and pool timeout, so an unreachable
database is a 503 within a couple of seconds, never a hang. On SQLite, read-only endpoints (handlers
with ``opt={"readonly": True}``) begin ``DEFERRED`` so that they never wait for the write lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request
from litestar.di import NamedDependency
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import engine_from_settings, make_session_factory
from core.settings import Settings

#: seconds to wait for a PostgreSQL connection to open, or for a free connection in the pool
CONNECT_TIMEOUT_SECONDS = 2
POOL_TIMEOUT_SECONDS = 5


@dataclass
class Database:
    engine: Engine
    read_engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]


def open_database(settings: Settings) -> Database:
    kwargs: dict[str, Any] = {}
    if not settings.is_sqlite:
        kwargs = {
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "nexmdm-api"},
            "pool_timeout": POOL_TIMEOUT_SECONDS,
        }
    engine = engine_from_settings(settings, **kwargs)
    read_engine = engine.execution_options(sqlite_begin="DEFERRED") if settings.is_sqlite else engine
    return Database(
        engine, read_engine, make_session_factory(engine, settings), make_session_factory(read_engine, settings)
    )


def database_lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database = open_database(settings)
        app.state.db = database
        try:
            yield
        finally:
            database.engine.dispose()

    return lifespan


def provide_db(request: Request[Any, Any, Any]) -> Iterator[Session]:
    """A session per request: committed when the handler returned, rolled back when anything raised."""
    database: Database = request.app.state.db
    factory = database.read_sessions if request.route_handler.opt.get("readonly") else database.sessions
    session = factory()
    try:
        yield session
        session.commit()
    finally:
        session.close()  # rolls back whatever was not committed


#: how handlers ask for the request's session
DB = NamedDependency[Session]
