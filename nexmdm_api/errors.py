"""The one mapping of errors to RFC 9457 problem details (``application/problem+json``).

Domain errors from ``core``, Litestar's own HTTP errors and database failures all end here, through
Litestar's ``ProblemDetailsPlugin``. Nothing else in the API builds an error response.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin
from sqlalchemy.exc import SQLAlchemyError

from core.base.errors import (
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidArgument,
    InvalidCredentials,
    NexMDMError,
    NotFound,
    NotMigrated,
    database_message,
)
from core.storage.dialect import from_database_error

logger = logging.getLogger("nexmdm.api")

PROBLEM_JSON = "application/problem+json"
#: seconds a client should wait before retrying when the database is unavailable
DATABASE_RETRY_AFTER = 5

_DOMAIN_STATUS: dict[type[NexMDMError], int] = {
    InvalidArgument: 422,
    NotFound: 404,
    Conflict: 409,
    InvalidCredentials: 401,
    Forbidden: 403,
    DatabaseUnavailable: 503,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, with a machine-readable ``code`` and, for 422, the failing fields."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = None


class ApiError(HTTPException):
    """An HTTP error raised by the API layer itself (never by ``core``)."""

    code = "error"

    def __init__(
        self, status_code: int, detail: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(detail=detail, status_code=status_code, headers=headers)
        self.code = code or _HTTP_CODES.get(status_code, "error")


def unauthorized(detail: str, code: str = "unauthorized") -> ApiError:
    """401; ``code`` is ``unauthorized`` or, for a known key past its expiry, ``key_expired``."""
    return ApiError(401, detail, code=code, headers={"WWW-Authenticate": 'Bearer realm="nexmdm"'})


def rate_limited(detail: str, retry_after: float) -> ApiError:
    return ApiError(429, detail, code="rate_limited", headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})


def _problem(
    status: int,
    detail: str,
    code: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
) -> ProblemDetailsException:
    extra: dict[str, Any] = {"code": code}
    if errors:
        extra["errors"] = errors
    return ProblemDetailsException(
        status_code=status,
        type_="about:blank",
        title=HTTPStatus(status).phrase,
        detail=detail,
        headers=headers,
        extra=extra,
    )


#: msgspec's words for a field a closed body does not declare: the problem names that field itself
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]{1,64})`$")


def _validation_errors(exc: ValidationException) -> list[dict[str, str]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            field, message = str(item.get("key") or item.get("source") or "body"), str(item.get("message"))
            unknown = _UNKNOWN_FIELD.match(message)
            if unknown is not None:  # `apps[0]` + `x` -> `apps[0].x`; the body's own -> `x`
                field = unknown.group(1) if field == "body" else f"{field}.{unknown.group(1)}"
            errors.append({"field": field, "message": message})
    return errors


def _unavailable(detail: str) -> ProblemDetailsException:
    return _problem(503, detail, "database_unavailable", headers={"Retry-After": str(DATABASE_RETRY_AFTER)})


def to_problem(exc: Exception) -> ProblemDetailsException:
    """Map any exception to a problem; this is the only place where errors get an HTTP status."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        first = exc.exceptions[0]
        return to_problem(first) if isinstance(first, Exception) else _problem(500, "internal error", "internal_error")
    if isinstance(exc, ProblemDetailsException):
        return exc
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or str(exc.detail)
        return _problem(422, detail, "validation_failed", errors=errors)
    if isinstance(exc, ApiError):
        return _problem(exc.status_code, str(exc.detail), exc.code, headers=exc.headers)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, "error")
        if status >= 500:
            logger.error("HTTP %s: %s", status, exc.detail)
        return _problem(status, str(exc.detail), code, headers=exc.headers)
    if isinstance(exc, NexMDMError):
        status = next((s for kind, s in _DOMAIN_STATUS.items() if isinstance(exc, kind)), 400)
        if isinstance(exc, DatabaseUnavailable):
            return _unavailable(exc.message)
        field_errors = [{"field": exc.field, "message": exc.message}] if exc.field and status == 422 else None
        headers = {"WWW-Authenticate": 'Bearer realm="nexmdm"'} if status == 401 else None
        return _problem(status, exc.message, exc.code, headers=headers, errors=field_errors)
    translated = from_database_error(exc)
    if translated is not None:
        # the driver's line goes to the log only: it may name constraints, tables or values
        level = logging.ERROR if isinstance(translated, NotMigrated) else logging.WARNING
        logger.log(level, "database error (%s): %s", translated.code, database_message(exc))
        return to_problem(translated)
    if isinstance(exc, SQLAlchemyError):
        logger.error("database error: %s", database_message(exc))
        return _unavailable("the database is unavailable")
    logger.error("unhandled error", exc_info=exc)
    return _problem(500, "internal error", "internal_error")


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map={Exception: to_problem}))


_DESCRIPTIONS = {
    400: "Malformed request: invalid JSON, an empty body, or a missing/invalid Idempotency-Key",
    401: "Missing, unknown, expired, exhausted or revoked credentials",
    403: "Valid credentials that may not do this",
    404: "No such resource",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported Content-Type",
    416: "Range not satisfiable",
    422: "Well-formed request with invalid values (or unknown fields on admin endpoints)",
    429: "Rate limited; see Retry-After",
    503: "Database unavailable or not migrated; see Retry-After",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI response declarations for the given error statuses (always with 503)."""
    return {
        status: ResponseSpec(
            data_container=Problem, description=_DESCRIPTIONS[status], media_type=PROBLEM_JSON, generate_examples=False
        )
        for status in sorted({*statuses, 503})
    }
