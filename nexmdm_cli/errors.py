"""The one place where errors become a red line on stderr and an exit code.

Database errors are classified by ``core.storage.dialect.from_database_error`` (the same function the API's
problem mapping uses), so the CLI and the API agree: a unique violation is a conflict (exit 4 / 409),
a refused value is exit 2 / 422, a missing table says "not migrated" (exit 5 / 503).
"""

from __future__ import annotations

import sys

from core.base.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidArgument,
    InvalidCredentials,
    LockTimeout,
    NexMDMError,
    NotFound,
    NotMigrated,
    database_message,
)

#: exit codes, documented in docs/cli.md (cron jobs and scripts rely on them)
EXIT_OK = 0
EXIT_FAILURE = 1  # a check found problems, or an unexpected error
EXIT_USAGE = 2  # bad option or argument (also click's own usage errors)
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_DATABASE = 5  # unreachable, or not migrated to this version
EXIT_LOCKED = 75  # another run holds the lock, or a step kept timing out on a lock: try again later (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it

EXIT_CODES: dict[type[NexMDMError], int] = {
    InvalidArgument: EXIT_USAGE,
    NotFound: EXIT_NOT_FOUND,
    Conflict: EXIT_CONFLICT,
    InvalidCredentials: EXIT_USAGE,
    DatabaseUnavailable: EXIT_DATABASE,
    LockTimeout: EXIT_LOCKED,
}


def _is_bad_url(exc: BaseException) -> bool:
    # sqlalchemy.exc.ArgumentError, by name: importing SQLAlchemy here would slow every command's start
    return any(kind.__name__ == "ArgumentError" and kind.__module__ == "sqlalchemy.exc" for kind in type(exc).__mro__)


def from_database_error(exc: BaseException) -> NexMDMError | None:
    """The domain error a database error means (``core.storage.dialect``), or None for any other error.

    Imported here, not at the top: SQLAlchemy stays out of ``nexmdm --help``, and an error can only come
    from the database once a command has loaded it.
    """
    if "sqlalchemy" not in sys.modules:
        return None
    from core.storage import dialect

    return dialect.from_database_error(exc)


def exit_code_for(exc: BaseException) -> int:
    translated = exc if isinstance(exc, NexMDMError) else from_database_error(exc)
    if translated is not None:
        for kind, code in EXIT_CODES.items():
            if isinstance(translated, kind):
                return code
    if _is_bad_url(exc):  # a malformed --database-url
        return EXIT_USAGE
    return EXIT_FAILURE


def message_for(exc: BaseException, masked_url: str) -> str:
    if isinstance(exc, NexMDMError):
        return exc.message
    translated = from_database_error(exc)
    if isinstance(translated, NotMigrated):
        return f"the database {masked_url} does not look migrated: run `nexmdm db upgrade` ({database_message(exc)})"
    if isinstance(translated, DatabaseUnavailable):
        return f"database error on {masked_url}: {database_message(exc)}"
    if translated is not None:
        return f"{translated.message}: {database_message(exc)}"
    if _is_bad_url(exc):
        return f"invalid database URL: {exc}"
    return f"unexpected error: {exc.__class__.__name__}: {exc}"
