"""The PostgreSQL/SQLite differences, in one place: the upsert's ``insert`` and driver errors read once.

NexMDM runs on both databases with the same statements; what differs is written here and nowhere else:
which ``insert`` construct carries ``ON CONFLICT`` (:func:`insert_for`), and how a driver error is read
(:func:`from_database_error`: SQLSTATE on PostgreSQL, the message on SQLite).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from core.base.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidValue,
    NexMDMError,
    NotFound,
    NotMigrated,
    database_message,
)

SUPPORTED = ("postgresql", "sqlite")


def bind_params(table: Table, *names: str) -> dict[str, Any]:
    """Bind parameters typed like ``table``'s columns, for statements built once and reused."""
    return {name: bindparam(name, type_=table.c[name].type) for name in names}


def refused(exc: IntegrityError, what: str) -> NexMDMError:
    """The domain error for a refused row; a missing parent (a foreign key) is named by ``what``."""
    error = from_database_error(exc) or InvalidValue("the database refused the row")
    return NotFound(what) if isinstance(error, NotFound) else error


def name_of(bind: Any) -> str:
    """The dialect's name (``postgresql`` or ``sqlite``) of an engine, connection or session."""
    if hasattr(bind, "get_bind"):
        bind = bind.get_bind()
    name: str = bind.dialect.name
    if name not in SUPPORTED:
        raise NotImplementedError(f"NexMDM supports SQLite and PostgreSQL, not {name}")
    return name


def is_postgresql(bind: Any) -> bool:
    return name_of(bind) == "postgresql"


def insert_for(dialect: Any, table: Any) -> Any:
    """``INSERT`` with ``ON CONFLICT`` into ``table`` (a Table or a mapped class): PostgreSQL's or SQLite's
    construct, which have the same methods (``on_conflict_do_nothing``/``_update``, ``excluded``).

    ``dialect`` is a dialect's name or anything :func:`name_of` reads one from (a session, a connection).
    """
    name = dialect if isinstance(dialect, str) else name_of(dialect)
    if name not in SUPPORTED:
        raise NotImplementedError(f"NexMDM supports SQLite and PostgreSQL, not {name}")
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


#: PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_PG_UNIQUE = "23505"
_PG_FOREIGN_KEY = "23503"
_PG_UNDEFINED = ("42P01", "42703", "3F000")  # undefined table, undefined column, invalid schema
#: SQLite speaks in messages only (``sqlite3`` exposes no SQLSTATE)
_SQLITE_UNIQUE = ("unique constraint failed", "primary key must be unique")
_SQLITE_FOREIGN_KEY = ("foreign key constraint failed",)
_SQLITE_UNDEFINED = ("no such table", "no such column")


def from_database_error(exc: BaseException) -> NexMDMError | None:
    """The domain error a SQLAlchemy/driver error means, or ``None`` when ``exc`` is no database error.

    The one place that classifies database failures, for the API's problems and the CLI's exit codes:

    * a unique violation is :class:`Conflict`; a foreign-key violation :class:`NotFound` (the row it
      names does not exist); any other refused value (check, NOT NULL, type, length) :class:`InvalidValue`;
    * a missing table or column is :class:`NotMigrated`;
    * a pool that gave no connection in time, a lost or refused connection, a lock or statement timeout
      and anything else the driver raises is :class:`DatabaseUnavailable`.

    PostgreSQL is read by SQLSTATE (psycopg2's ``pgcode``), SQLite by message. Messages are fixed (safe
    to show an API client); the driver's line is in :func:`database_message`. The returned error keeps
    ``exc`` as its ``__cause__``.
    """
    from sqlalchemy import exc as sa

    if not isinstance(exc, sa.DBAPIError | sa.TimeoutError):
        return None  # a usage error of SQLAlchemy itself (ArgumentError...) is not the database's answer
    pgcode = getattr(getattr(exc, "orig", None), "pgcode", None)
    lowered = database_message(exc).lower()
    error: NexMDMError
    if isinstance(exc, sa.TimeoutError):
        error = DatabaseUnavailable("the database is overloaded: no connection became free in time")
    elif pgcode == _PG_UNIQUE or (pgcode is None and lowered.startswith(_SQLITE_UNIQUE)):
        error = Conflict("the request conflicts with the stored data (the row already exists)")
    elif pgcode == _PG_FOREIGN_KEY or (pgcode is None and lowered.startswith(_SQLITE_FOREIGN_KEY)):
        error = NotFound("a row this refers to does not exist")
    elif pgcode in _PG_UNDEFINED or (pgcode is None and lowered.startswith(_SQLITE_UNDEFINED)):
        error = NotMigrated("the database is not migrated to this version of NexMDM: run `nexmdm db upgrade`")
    elif isinstance(exc, sa.IntegrityError | sa.DataError):
        error = InvalidValue("a value was refused by the database")
    elif isinstance(exc, sa.ProgrammingError):
        # another 42xxx: a statement the schema does not fit (a schema that drifted from the migrations)
        error = NotMigrated("the database schema does not match this version of NexMDM: run `nexmdm db upgrade`")
    else:
        error = DatabaseUnavailable("the database is unavailable")
    error.__cause__ = exc
    return error


def string_agg(bind: Any, column: Any, separator: str) -> Any:
    """The values of a group joined by ``separator``, in no particular order (PostgreSQL's ``string_agg``,
    SQLite's ``group_concat``)."""
    if is_postgresql(bind):
        return func.string_agg(column, separator)
    return func.group_concat(column, separator)


def xact_lock(bind: Any, name: str) -> None:
    """Serialize a duty across processes until the transaction ends: a transaction-level advisory lock on
    PostgreSQL; nothing on SQLite, where writers are serialized already."""
    if is_postgresql(bind):
        bind.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
