"""Domain errors raised by ``core``; the API and the CLI each map them once."""

from __future__ import annotations


class NexMDMError(Exception):
    """Base class of every error that ``core`` raises on purpose."""

    #: short machine-readable code, used in problem details and JSON output
    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(NexMDMError):
    """A value is missing, malformed or out of range; nothing was written."""

    code = "invalid_argument"


class NotFound(NexMDMError):
    """The named resource does not exist."""

    code = "not_found"


class Conflict(NexMDMError):
    """The request conflicts with the current state (already exists, already acknowledged...)."""

    code = "conflict"


class InvalidCredentials(NexMDMError):
    """A token or key is missing, unknown, expired, exhausted or revoked."""

    code = "invalid_credentials"


class Forbidden(NexMDMError):
    """Valid credentials that may not do this (a device acting on another device)."""

    code = "forbidden"


class DatabaseUnavailable(NexMDMError):
    """The database cannot be reached or is not migrated."""

    code = "database_unavailable"


class LockTimeout(NexMDMError):
    """A maintenance step kept timing out on a lock (or its statement time limit); what it committed stays."""

    code = "lock_timeout"


class LockLost(LockTimeout):
    """The maintenance lock passed to another holder while a step ran; what was committed before stays."""

    code = "lock_lost"


class SelectorTooSlow(InvalidArgument):
    """A read that evaluates a selector ran past ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` (PostgreSQL) and
    was cancelled: the selector reads too much of the fleet (a term without an index) for an answer in
    time. Nothing was written; the remedy is a narrower selector, so it is a 422 / exit 2, not a 503."""

    code = "selector_too_slow"

    def __init__(self, message: str, *, limit_ms: int) -> None:
        super().__init__(message, field="selector")
        self.limit_ms = limit_ms


class InvalidValue(InvalidArgument):
    """The database refused a value (a check, a NOT NULL, a type or length); nothing was written."""

    code = "invalid_value"


class NotMigrated(DatabaseUnavailable):
    """The database answers but lacks a table or column this code needs: run ``nexmdm db upgrade``.

    Its ``code`` stays ``database_unavailable`` (the API's stable code for every 503 of the database);
    the message says what to do.
    """


# --------------------------------------------------------------------------- driver errors, once

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
    from sqlalchemy import exc as sa  # here, not at import: the CLI starts without SQLAlchemy

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


def database_message(exc: BaseException) -> str:
    """The driver's first line (for logs and the CLI's message; never sent to API clients)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
