"""Who is signed in to the console: the session cookie, the check before every page, roles and scope.

The cookie holds a session's secret (``core.access.console``); it is ``HttpOnly``, ``SameSite=Lax`` and
``Secure`` unless the console is reached on a loopback address (plain HTTP on a laptop). The check runs
before each console handler (the console's own ``before_request``, in place of the API's bearer checks):
a page without a valid session redirects to the sign-in page, a form post gets 401. The role check is the
admin API's (``core.access.keys.role_allows``) with the same least roles; a scoped person is limited to
their scope, a device outside it being 404 as in the API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
from litestar import Request, Response
from litestar.datastructures import Cookie, ResponseHeader
from litestar.response import Redirect

from core.access import console as people
from core.access.keys import role_allows
from core.base import security
from core.base.errors import InvalidCredentials
from core.events.audit import Actor
from nexmdm_api.auth import client_ip
from nexmdm_api.errors import ApiError

COOKIE = "nexmdm_console"
CSRF_COOKIE = "nexmdm_csrf"
PREFIX = "/console"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")

#: on every console response: no inline script, no framing, no MIME sniffing, no referrer outside
SECURITY_HEADERS = [
    ResponseHeader(
        name="Content-Security-Policy",
        value=(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        ),
    ),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]


def is_loopback(request: Request[Any, Any, Any]) -> bool:
    return (request.url.hostname or "") in _LOOPBACK


def secure_cookies(request: Request[Any, Any, Any]) -> bool:
    """Whether the console's cookies are ``Secure``: as ``NEXMDM_PUBLIC_URL``'s scheme says when it is set (a
    proxy that forwards ``Host: localhost`` must not turn it off), else unless reached on a loopback address."""
    public = request.app.state.settings.public_url
    return public.startswith("https://") if public else not is_loopback(request)


def session_cookie(request: Request[Any, Any, Any], secret: str | None) -> Cookie:
    """The session cookie (``None``: the cookie that deletes it)."""
    return Cookie(
        key=COOKIE,
        value=secret or "",
        path=PREFIX,
        httponly=True,
        secure=secure_cookies(request),
        samesite="lax",
        max_age=None if secret else 0,
    )


def _our_origin(request: Request[Any, Any, Any], url: str) -> bool:
    """``url`` (an ``Origin`` or ``Referer``) is the console's own site: ``NEXMDM_PUBLIC_URL``'s scheme and host,
    else the request's own host (behind a proxy that ends TLS the scheme seen here may differ)."""
    given = urlsplit(url)
    public = request.app.state.settings.public_url
    if public:
        ours = urlsplit(public)
        return (given.scheme, given.netloc.lower()) == (ours.scheme, ours.netloc.lower())
    return bool(given.netloc) and given.netloc.lower() == (request.headers.get("host") or "").lower()


def _refuse_forgery(request: Request[Any, Any, Any], why: str) -> None:
    request.app.state.audit_buffer.add("user:unknown", "console.csrf", client_ip(request))
    raise ApiError(403, why, code="csrf_refused")


def check_origin(request: Request[Any, Any, Any]) -> None:
    """A state-changing request sent from another site is refused and audited (``console.csrf``): by its
    ``Origin``, else its ``Referer`` (browsers send one of them with a form; a client that sends neither still
    needs the form's CSRF token)."""
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value:
            if not _our_origin(request, value):
                _refuse_forgery(request, "this form was sent from another site; open the console and send it again")
            return


def check_csrf_binding(request: Request[Any, Any, Any], person: people.Person) -> None:
    """The form's CSRF token (already matched with its cookie by Litestar's middleware) must be the one issued
    with this session at sign-in: a token from another browser's session (a cookie planted by a sibling site),
    or one from before the sign-in, is refused and audited."""
    token = request.cookies.get(CSRF_COOKIE) or ""
    if not security.matches(token, person.csrf_hash):
        _refuse_forgery(request, "this form does not belong to your session; reload the page and send it again")


async def check_person(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Before every console handler: the person behind the cookie on ``request.state.person``, or sign in.
    A state-changing request must come from the console's own site and carry its session's CSRF token."""
    unsafe = request.method not in _SAFE_METHODS
    if unsafe:
        check_origin(request)
    if request.route_handler.opt.get("public"):
        return None
    secret = request.cookies.get(COOKIE)
    database = request.app.state.db
    settings = request.app.state.settings

    def authenticate() -> people.Person:
        with database.read_sessions() as db:
            person, stale = people.authenticate_session(db, secret or "")
        if stale:
            with database.sessions.begin() as db:
                people.touch_session(db, settings, person.session_id)
        return person

    try:
        if not secret or not secret.isascii() or len(secret) > 128:
            raise InvalidCredentials("not signed in")
        request.state.person = await anyio.to_thread.run_sync(authenticate)
    except InvalidCredentials:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return Redirect(f"{PREFIX}/signin?next={quote(target, safe='')}", status_code=303)
        raise ApiError(401, "not signed in, or the session ended; sign in again", code="unauthorized") from None
    if unsafe:
        check_csrf_binding(request, request.state.person)
    return None


def person(request: Request[Any, Any, Any]) -> people.Person:
    return request.state.person  # type: ignore[no-any-return]


def need(request: Request[Any, Any, Any], role: str, *, unscoped: bool = False) -> people.Person:
    """The person, if their role reaches ``role`` (else 403, audited as a refusal like the API's)."""
    who = person(request)
    refused = None
    if not role_allows(who.role, role):
        refused = f"you have the role {who.role}; this needs {role}"
    elif unscoped and who.scope is not None:
        refused = f"your role is limited to {who.scope!r}; this needs a role over the whole fleet"
    if refused is not None:
        request.app.state.audit_buffer.add(
            who.actor_name, request.route_handler.opt.get("action", "console"), client_ip(request)
        )
        raise ApiError(403, refused, code="insufficient_role")
    return who


def actor(request: Request[Any, Any, Any]) -> Actor:
    """The audit actor of a console action: ``user:EMAIL`` from the client's address; a scoped person's rows
    carry the ``scope`` in their details, as a scoped key's do (``core.events.audit.key_actor``)."""
    who = person(request)
    return Actor(who.actor_name, client_ip(request), {"scope": who.scope} if who.scope is not None else {})
