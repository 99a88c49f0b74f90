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


class KeyExpired(InvalidCredentials):
    """An admin key past its ``expires_at``: 401 ``key_expired`` (an unknown key is ``unauthorized``)."""

    code = "key_expired"


class OutOfScope(Forbidden):
    """A scoped principal (``operator@store=42``) asked for what its scope may not reach: key, webhook or
    enrollment token management, an unscoped campaign, a label its scope is defined by. A device outside
    the scope is not this error but ``NotFound`` (its existence is not revealed)."""

    code = "out_of_scope"


class DatabaseUnavailable(NexMDMError):
    """The database cannot be reached or is not migrated."""

    code = "database_unavailable"


class LockTimeout(NexMDMError):
    """A maintenance step kept timing out on a lock (or its statement time limit); what it committed stays."""

    code = "lock_timeout"
    #: rows a cleanup had deleted (committed) in the step that stopped, for its audit row
    deleted = 0


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


def database_message(exc: BaseException) -> str:
    """The driver's first line (for logs and the CLI's message; never sent to API clients)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
