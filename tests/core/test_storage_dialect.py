"""Database errors are classified once (``core.storage.dialect.from_database_error``), on both databases, and the
API's problems and the CLI's exit codes agree on every class."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import Conflict, DatabaseUnavailable, InvalidValue, NotFound, NotMigrated
from core.models import FcmDispatch
from core.storage.dialect import from_database_error
from nexmdm_api.errors import to_problem
from nexmdm_cli.errors import EXIT_CONFLICT, EXIT_DATABASE, EXIT_NOT_FOUND, EXIT_USAGE, exit_code_for, message_for
from tests.support.databases import add_device


def _driver_error(session_factory: sessionmaker[Session], statement: Callable[[Session], object]) -> DBAPIError:
    with session_factory() as db:
        try:
            statement(db)
            db.flush()
        except DBAPIError as exc:
            db.rollback()
            return exc
    raise AssertionError("the database accepted the statement")


def _unique(db: Session) -> None:
    db.execute(
        text("INSERT INTO admin_keys (id, name, key_hash, created_at) VALUES ('k1', 'a', 'h1', :t)"),
        {"t": "2026-01-01"},
    )
    db.execute(
        text("INSERT INTO admin_keys (id, name, key_hash, created_at) VALUES ('k2', 'a', 'h2', :t)"),
        {"t": "2026-01-01"},
    )


def _foreign_key(db: Session) -> None:
    db.add(
        FcmDispatch(
            request_id="r1", device_id="nobody", action="ping", payload_hash="x", status="pending", fcm_status="pending"
        )
    )


def _check(db: Session) -> None:
    db.add(
        FcmDispatch(
            request_id="r2", device_id="dev_001", action="ping", payload_hash="x", status="lost", fcm_status="pending"
        )
    )


def _missing_table(db: Session) -> None:
    db.execute(text("SELECT * FROM table_of_a_later_version"))


CASES = {
    "unique": (_unique, Conflict, 409, EXIT_CONFLICT),
    "foreign key": (_foreign_key, NotFound, 404, EXIT_NOT_FOUND),
    "check": (_check, InvalidValue, 422, EXIT_USAGE),
    "not migrated": (_missing_table, NotMigrated, 503, EXIT_DATABASE),
}


@pytest.mark.parametrize("case", CASES)
def test_driver_errors_translate_the_same_on_both_databases(session_factory: sessionmaker[Session], case: str) -> None:
    statement, kind, status, exit_code = CASES[case]
    add_device(session_factory, "dev_001")
    exc = _driver_error(session_factory, statement)
    translated = from_database_error(exc)
    assert type(translated) is kind
    assert translated.__cause__ is exc
    # the API and the CLI both go through it, and agree
    assert to_problem(exc).status_code == status
    assert exit_code_for(exc) == exit_code
    if kind is NotMigrated:
        assert "not migrated" in to_problem(exc).detail
        assert "does not look migrated" in message_for(exc, "db://masked")


def test_unreachable_database_and_pool_timeout_are_unavailable() -> None:
    engine: Engine = create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/x", connect_args={"connect_timeout": 2})
    with pytest.raises(DBAPIError) as caught:
        engine.connect()
    for exc in (caught.value, PoolTimeout("QueuePool limit reached")):
        assert type(from_database_error(exc)) is DatabaseUnavailable
        assert to_problem(exc).status_code == 503
        assert exit_code_for(exc) == EXIT_DATABASE


def test_other_errors_are_not_database_errors() -> None:
    assert from_database_error(ValueError("x")) is None
    assert from_database_error(SQLAlchemyError("a usage error of SQLAlchemy")) is None
