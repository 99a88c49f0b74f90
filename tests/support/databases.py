"""Throwaway databases for tests: SQLite files and PostgreSQL databases, created per run and dropped at its end.

PostgreSQL tests skip when no server answers, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import database_message
from core.base.settings import normalize_database_url
from core.models import Device
from core.storage.engine import mask_url
from core.storage.migrations import alembic_config

#: an admin URL that may create databases, normalized the way the product normalizes NEXMDM_DATABASE_URL
#: (``postgresql://`` means psycopg2), so that the README's form works here too
PG_ADMIN_URL = normalize_database_url(
    os.environ.get("NEXMDM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ["sqlite", "postgresql"]


def _pg_admin() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


def database_url_for(name: str, admin_url: str = PG_ADMIN_URL) -> str:
    """The admin URL with another database name (its user, host, port and query options kept)."""
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def postgres_problem(exc: BaseException, admin_url: str = PG_ADMIN_URL) -> str:
    """Why the PostgreSQL tests cannot run, in words that name the real cause."""
    where = mask_url(admin_url)
    if isinstance(exc, ImportError):
        return f"the driver for {where} is not installed ({exc}); NEXMDM_TEST_PG_URL picks it"
    if isinstance(exc, ArgumentError):
        return f"NEXMDM_TEST_PG_URL is not a database URL: {exc}"
    if isinstance(exc, OperationalError):
        return f"PostgreSQL is not reachable at {where}: {database_message(exc)}"
    return f"PostgreSQL at {where} failed: {exc.__class__.__name__}: {database_message(exc)}"


_PG_PROBLEM: list[str | None] = []  # checked once per run


def _require_postgres() -> None:
    if not _PG_PROBLEM:
        try:
            engine = _pg_admin()
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            finally:
                engine.dispose()
            _PG_PROBLEM.append(None)
        except Exception as exc:  # noqa: BLE001 - reported below, by its real cause
            _PG_PROBLEM.append(postgres_problem(exc))
    message = _PG_PROBLEM[0]
    if message is not None:
        if IN_CI:
            pytest.fail(message + " (CI=true requires it)", pytrace=False)
        pytest.skip(message)


class DatabaseFactory:
    """Creates throwaway databases (SQLite files or PostgreSQL databases) and removes them at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg_names: list[str] = []

    def create(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / f'nexmdm-{uuid.uuid4().hex[:8]}.db'}"
        _require_postgres()
        name = f"nexmdm_test_{uuid.uuid4().hex[:10]}"
        admin = _pg_admin()
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.pg_names.append(name)
        return database_url_for(name)

    def drop_all(self) -> None:
        if not self.pg_names:
            return
        admin = _pg_admin()
        with admin.connect() as conn:
            for name in self.pg_names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def add_device(session_factory: sessionmaker[Session], device_id: str = "dev_001", **fields: object) -> None:
    with session_factory.begin() as session:
        session.add(Device(id=device_id, **fields))


def run_together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` in ``n`` threads released at the same moment; returns the results, raises the first error."""
    barrier = threading.Barrier(n)

    def call(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(call, range(n)))
