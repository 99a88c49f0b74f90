"""Bearer authentication for the three kinds of credential, with the failed-authentication limiter.

The checks run inside the handler's worker thread, in the request's own session and transaction: one
thread hop per request, and on SQLite no lock is ever held while a request waits for a thread.

A request that carries valid credentials is never refused by the limiter: a blocked address only gets
429 instead of 401 for credentials that fail, and is refused without a database look-up only when it
sends no bearer token at all or one that cannot be valid (wrong prefix or shape).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import anyio.to_thread
from litestar import Request
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.access import keys as admin_keys
from core.base import security
from core.base.errors import InvalidCredentials, KeyExpired, NexMDMError
from core.commands.catalogue import catalogue_for
from core.devices import records as devices
from core.enrollment import tokens as credentials
from core.events.audit import Actor, key_actor
from core.models import ROLES, Device
from nexmdm_api.errors import ApiError, rate_limited, unauthorized
from nexmdm_api.ratelimit import FailureLimiter, client_key

logger = logging.getLogger("nexmdm.api")

ENROLLMENT = security.ENROLLMENT_PREFIX + "_"
DEVICE = security.DEVICE_PREFIX + "_"
ADMIN = security.ADMIN_PREFIX + "_"
_MAX_TOKEN_LENGTH = 128

#: OpenAPI security requirements, by who may call an endpoint
DEVICE_SECURITY: list[dict[str, list[str]]] = [{"deviceToken": []}]
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminKey": []}]
ENROLLMENT_SECURITY: list[dict[str, list[str]]] = [{"enrollmentToken": []}]
ANY_SECURITY: list[dict[str, list[str]]] = [{"enrollmentToken": []}, {"deviceToken": []}, {"adminKey": []}]


def admin_route(role: str, *, scoped: bool = False, **opt: Any) -> dict[str, Any]:
    """Route decorator arguments of an admin endpoint that needs at least ``role``.

    The role is checked by :func:`authorize_admin` before the body is read, and documented in the
    OpenAPI document as the security requirement's scope (``adminKey: [operator]``: OpenAPI 3.1 lets
    schemes other than OAuth list the roles an operation needs there).

    ``scoped=True`` lets a scoped principal (``operator@store=42``) in: the handler then limits what it
    reads and writes to :func:`scope_of` (``core.devices.scopes``). Without it a scoped principal is 403
    ``out_of_scope``: an endpoint is closed to scoped keys until it applies the scope.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return {"security": [{"adminKey": [role]}], "opt": {"auth": "admin", "role": role, "scoped": scoped, **opt}}


@dataclass(frozen=True)
class Principal:
    """Who is downloading an APK: the audit ``source`` and the credential's public id."""

    kind: str  # enrollment, device or admin
    token_id: str


def client_ip(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
        return None
    return token


def _limiter(request: Request[Any, Any, Any]) -> FailureLimiter:
    return cast(FailureLimiter, request.app.state.auth_limiter)  # per process, or shared (a subclass)


def _count_admin_failure(request: Request[Any, Any, Any]) -> None:
    if request.route_handler.opt.get("auth") == "admin":
        request.app.state.audit_buffer.failed_auth(client_ip(request))


def _answer(detail: str, wait: float | None, code: str) -> Exception:
    if wait is not None:
        return rate_limited("too many failed authentications from this address", wait)
    return unauthorized(detail, code)


def refused(request: Request[Any, Any, Any], detail: str, code: str = "unauthorized") -> Exception:
    """Count a failed authentication; 429 once the address is over its limit, else 401 (in a worker thread:
    on the event loop use :func:`refused_async`, which never blocks the loop on Redis)."""
    _count_admin_failure(request)
    return _answer(detail, _limiter(request).fail(client_key(client_ip(request))), code)


async def refused_async(request: Request[Any, Any, Any], detail: str, code: str = "unauthorized") -> Exception:
    """:func:`refused` for code on the event loop."""
    _count_admin_failure(request)
    return _answer(detail, await _limiter(request).fail_async(client_key(client_ip(request))), code)


def _credential_code(exc: InvalidCredentials) -> str:
    """``key_expired`` for an expired admin key, ``unauthorized`` for everything else."""
    return exc.code if isinstance(exc, KeyExpired) else "unauthorized"


def _blocked(request: Request[Any, Any, Any], wait: float | None) -> Exception | None:
    """A blocked address's 429 for a request without a token of the right kind (not counted again)."""
    if wait is None:
        return None
    _count_admin_failure(request)
    return rate_limited("too many failed authentications from this address", wait)


def _of_kind(request: Request[Any, Any, Any], prefixes: tuple[str, ...]) -> str | None:
    token = bearer_token(request)
    return token if token is not None and token.startswith(prefixes) else None


def _token(request: Request[Any, Any, Any], prefixes: tuple[str, ...], what: str) -> str:
    """The bearer token of the right kind, in a worker thread (:func:`_token_async` on the event loop)."""
    token = _of_kind(request, prefixes)
    if token is None:
        blocked = _blocked(request, _limiter(request).retry_after(client_key(client_ip(request))))
        raise blocked or refused(request, f"this endpoint needs {what} as 'Authorization: Bearer <token>'")
    return token


async def _token_async(request: Request[Any, Any, Any], prefixes: tuple[str, ...], what: str) -> str:
    token = _of_kind(request, prefixes)
    if token is None:
        wait = await _limiter(request).retry_after_async(client_key(client_ip(request)))
        blocked = _blocked(request, wait)
        raise blocked or await refused_async(request, f"this endpoint needs {what} as 'Authorization: Bearer <token>'")
    return token


_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "device": ((DEVICE,), "a device token"),
    "admin": ((ADMIN,), "an admin key"),
    "enrollment": ((ENROLLMENT,), "an enrollment token"),
    "any": ((ENROLLMENT, DEVICE, ADMIN), "an enrollment token, a device token or an admin key"),
}


async def precheck(request: Request[Any, Any, Any]) -> None:
    """Before the body is read: refuse a request without a bearer token of the right kind (no database).

    Handlers declare who may call them with ``opt={"auth": "device" | "admin" | "enrollment" | "any"}``;
    the full check (the token exists, is not revoked...) runs in the handler.
    """
    kind = request.route_handler.opt.get("auth")
    if kind is not None:
        prefixes, what = _KINDS[kind]
        await _token_async(request, prefixes, what)


def require_device(request: Request[Any, Any, Any], db: Session) -> Device:
    token = _token(request, *_KINDS["device"])
    try:
        return devices.authenticate_device(db, token)
    except InvalidCredentials as exc:
        raise refused(request, exc.message) from None


async def authorize_admin(request: Request[Any, Any, Any]) -> None:
    """The guard of every admin endpoint, before its body is read: a valid key, then its role (else 403).

    The key is looked up in a short read-only session of its own; the handler finds it on
    ``request.state.admin_key``. A 403 is counted for the audit trail (``denied``, aggregated).
    """
    needed = request.route_handler.opt.get("role")
    if needed not in ROLES:  # a route without a declared role is refused, never open
        raise ApiError(500, "this endpoint declares no role", code="internal_error")
    token = await _token_async(request, *_KINDS["admin"])
    sessions = request.app.state.db.read_sessions

    def authenticate() -> dict[str, Any]:
        with sessions() as db:
            key = admin_keys.authenticate_admin(db, token)
        note_admin_key_use(request, key)
        return key

    try:
        key = await anyio.to_thread.run_sync(authenticate)
    except InvalidCredentials as exc:
        raise await refused_async(request, exc.message, _credential_code(exc)) from None
    if not admin_keys.role_allows(key["role"], needed):
        request.app.state.audit_buffer.add(f"key:{key['name']}", _action(request), client_ip(request))
        raise ApiError(
            403,
            f"the admin key {key['name']!r} has the role {key['role']}; this endpoint needs {needed}",
            code="insufficient_role",
        )
    if key.get("scope") is not None and not request.route_handler.opt.get("scoped"):
        request.app.state.audit_buffer.add(f"key:{key['name']}", _action(request), client_ip(request))
        raise ApiError(
            403,
            f"the admin key {key['name']!r} is scoped to {key['scope']}; this endpoint needs an unscoped key",
            code="out_of_scope",
        )
    request.state.admin_key = key


def confirm_admin(request: Request[Any, Any, Any], db: Session | Connection) -> None:
    """First in the transaction that writes for an admin request: is its key still valid, with the role?

    :func:`authorize_admin` checked it when the headers arrived; the body came later (see
    ``core.access.keys.confirm_admin_key``). A key revoked meanwhile is 401, a role lowered 403.
    """
    key, needed = request.state.admin_key, request.route_handler.opt["role"]
    try:
        role = admin_keys.confirm_admin_key(db, key["id"])
    except InvalidCredentials as exc:
        _count_admin_failure(request)
        raise unauthorized(exc.message, _credential_code(exc)) from None
    if not admin_keys.role_allows(role, needed):
        request.app.state.audit_buffer.add(f"key:{key['name']}", _action(request), client_ip(request))
        raise ApiError(
            403,
            f"the admin key {key['name']!r} now has the role {role}; this endpoint needs {needed}",
            code="insufficient_role",
        )


def _action(request: Request[Any, Any, Any]) -> str:
    return request.route_handler.opt.get("action") or f"{request.method} {request.scope.get('path_template')}"


def require_admin(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The key that :func:`authorize_admin` let in."""
    return cast("dict[str, Any]", request.state.admin_key)


def scope_of(request: Request[Any, Any, Any]) -> str | None:
    """The scope of the admin request's principal (``store=42``), ``None`` for the whole fleet.

    The one place the API reads it: a handler of a ``scoped=True`` route passes it to the core function
    it calls, which ANDs it into its SQL (``core.devices.scopes.restrict``).
    """
    scope = require_admin(request).get("scope")
    return str(scope) if scope is not None else None


def require_action_role(request: Request[Any, Any, Any], action: str) -> None:
    """An action's own least role (``wipe``: admin) beyond the route's: 403 ``insufficient_role``, counted."""
    known = catalogue_for(request.app.state.settings).actions.get(action)
    key = require_admin(request)
    if known is not None and not admin_keys.role_allows(key["role"], known.least_role):
        request.app.state.audit_buffer.add(f"key:{key['name']}", _action(request), client_ip(request))
        raise ApiError(
            403,
            f"the admin key {key['name']!r} has the role {key['role']}; the action {action!r} needs {known.least_role}",
            code="insufficient_role",
        )


def admin_actor(request: Request[Any, Any, Any]) -> Actor:
    """The audit actor of an admin request: ``key:NAME`` from the client's address (and its scope)."""
    key = require_admin(request)
    return key_actor(key["name"], client_ip(request), key.get("scope"))


def note_admin_key_use(request: Request[Any, Any, Any], key: dict[str, Any], db: Session | None = None) -> None:
    """Record the key's last use, at most once a minute (no write at all in between).

    From the admin guard (``db`` None: no request transaction has begun yet) in a short write
    transaction of its own. From a handler, in the request's transaction (a savepoint), except for a
    read-only endpoint on SQLite: its transaction is DEFERRED and a write there could meet "database is
    locked" at once, so the use goes in a short transaction of its own. Bookkeeping never fails a request.
    """
    if not admin_keys.key_use_is_stale(key):
        return
    try:
        if db is None or (request.app.state.settings.is_sqlite and request.route_handler.opt.get("readonly")):
            with request.app.state.db.sessions.begin() as own:
                admin_keys.record_admin_key_use(own, key["id"])
        else:
            with db.begin_nested():  # a savepoint: a failure here leaves the request's transaction usable
                admin_keys.record_admin_key_use(db, key["id"])
    except (NexMDMError, SQLAlchemyError) as exc:
        logger.warning("could not record the use of admin key %s: %s", key["name"], exc.__class__.__name__)


def require_enrollment_secret(request: Request[Any, Any, Any]) -> str:
    """The enrollment token's secret; ``core.enrollment.enroll.enroll_device`` checks it (and its uses) atomically."""
    return _token(request, *_KINDS["enrollment"])


def enrollment_refused(request: Request[Any, Any, Any], exc: InvalidCredentials) -> Exception:
    return refused(request, exc.message)


def require_apk_reader(request: Request[Any, Any, Any], db: Session) -> Principal:
    """An enrollment token (usable, uses not taken), a device or an admin key."""
    token = _token(request, *_KINDS["any"])
    try:
        if token.startswith(ENROLLMENT):
            enrollment = credentials.find_enrollment_token(db, token)
            credentials.check_enrollment_token_usable(enrollment)
            return Principal("enrollment", enrollment.id)
        if token.startswith(DEVICE):
            return Principal("device", devices.authenticate_device(db, token).id)
        key = admin_keys.authenticate_admin(db, token)
    except InvalidCredentials as exc:
        raise refused(request, exc.message, _credential_code(exc)) from None
    note_admin_key_use(request, key, db)
    return Principal("admin", key["id"])
