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
