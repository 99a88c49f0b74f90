"""The one place where errors become a red line on stderr and an exit code."""

from __future__ import annotations

from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError

from core.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidArgument,
    InvalidCredentials,
    LockTimeout,
    NexMDMError,
    NotFound,
)

#: exit codes, documented in docs/cli.md (cron jobs and scripts rely on them)
EXIT_OK = 0
EXIT_FAILURE = 1  # a check found problems, or an unexpected error
EXIT_USAGE = 2  # bad option or argument (also click's own usage errors)
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_DATABASE = 5  # unreachable, or not migrated to this version
EXIT_LOCKED = 75  # another run holds the lock, or a step kept timing out on a lock: try again later (EX_TEMPFAIL)

EXIT_CODES: dict[type[NexMDMError], int] = {
    InvalidArgument: EXIT_USAGE,
    NotFound: EXIT_NOT_FOUND,
    Conflict: EXIT_CONFLICT,
    InvalidCredentials: EXIT_USAGE,
    DatabaseUnavailable: EXIT_DATABASE,
    LockTimeout: EXIT_LOCKED,
}


def exit_code_for(exc: BaseException) -> int:
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            return code
    if isinstance(exc, OperationalError | ProgrammingError):
        return EXIT_DATABASE
    if isinstance(exc, ArgumentError):  # a malformed --database-url
        return EXIT_USAGE
    return EXIT_FAILURE


def message_for(exc: BaseException, masked_url: str) -> str:
    if isinstance(exc, NexMDMError):
        return exc.message
    if isinstance(exc, OperationalError):
        orig = str(getattr(exc, "orig", exc)).strip().splitlines()
        return f"database error on {masked_url}: {orig[0] if orig else 'unreachable'}"
    if isinstance(exc, ProgrammingError):
        return f"the database {masked_url} does not look migrated: run `nexmdm db upgrade`"
    if isinstance(exc, ArgumentError):
        return f"invalid database URL: {exc}"
    return f"unexpected error: {exc.__class__.__name__}: {exc}"
