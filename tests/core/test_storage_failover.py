"""The errors a failover produces, from a real PostgreSQL: a 503 with ``Retry-After`` (exit 5), never a 500,
and a pool that drops the connection that met them (``core/storage/failover.py``)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from core.base.errors import DatabaseUnavailable
from core.storage.dialect import from_database_error
from core.storage.engine import make_engine
from core.storage.failover import is_failover_error
from nexmdm_api.errors import to_problem
from nexmdm_cli.errors import EXIT_DATABASE, exit_code_for

ON_POSTGRESQL = pytest.mark.parametrize("backend", ["postgresql"])

_INSERT = text("INSERT INTO admin_keys (id, name, key_hash, created_at) VALUES ('k1', 'a', 'h1', now())")


def _pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _check_unavailable(exc: DBAPIError) -> None:
    assert isinstance(from_database_error(exc), DatabaseUnavailable)
    problem = to_problem(exc)
    assert problem.status_code == 503 and problem.headers and problem.headers["Retry-After"]
    assert exit_code_for(exc) == EXIT_DATABASE


@ON_POSTGRESQL
def test_a_read_only_server_is_503_and_its_connection_is_replaced(engine: Engine, database_url: str) -> None:
    pool = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with pool.connect() as conn:  # the server this connection reaches stops taking writes (a demoted primary)
            conn.execute(text("SET SESSION default_transaction_read_only = on"))
            conn.commit()
        before = _pid(pool)
        with pytest.raises(DBAPIError) as caught, pool.begin() as conn:
            conn.execute(_INSERT)
        assert getattr(caught.value.orig, "pgcode", None) == "25006"
        _check_unavailable(caught.value)

        with pool.begin() as conn:  # a new connection, which writes
            conn.execute(_INSERT)
        assert _pid(pool) != before
    finally:
        pool.dispose()


@ON_POSTGRESQL
def test_a_connection_ended_by_the_server_is_503_and_the_next_request_reconnects(
    engine: Engine, database_url: str
) -> None:
    pool = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        victim = _pid(pool)
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        with pytest.raises(DBAPIError) as caught, pool.connect() as conn:
            conn.execute(text("SELECT 1"))  # used at once: the idle ping does not run for a busy connection
        _check_unavailable(caught.value)
        assert _pid(pool) != victim
    finally:
        pool.dispose()


def test_which_sqlstates_end_a_connection() -> None:
    assert all(is_failover_error(code) for code in ("25006", "57P01", "57P02", "57P03", "08006", "08001"))
    assert not any(is_failover_error(code) for code in (None, "23505", "40001", "57014", "42P01"))
