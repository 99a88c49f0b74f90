"""Signing in and out of the console: the one-time link, OpenID Connect, sign-out.

A link (``/console/auth/link#token=...``: the token in the fragment, never sent in a request line, so in
no access log) opens a page with a "Sign in" button (a POST with its CSRF token): a chat client or mail
scanner that fetches the link to preview it does not use it up. Every sign-in and sign-out is audited
(``console.sign_in``/``console.sign_out``, actor ``user:EMAIL``).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.middleware.csrf import generate_csrf_token
from litestar.params import Body, FromQuery, QueryParameter
from litestar.response import Redirect, Template
from litestar.utils.scope.state import ScopeState

from core.access import console as people
from core.base.errors import InvalidCredentials
from nexmdm_api.auth import client_ip
from nexmdm_api.console import session
from nexmdm_api.console.session import PREFIX
from nexmdm_api.db import DB
from nexmdm_api.errors import rate_limited
from nexmdm_api.ratelimit import client_key
from nexmdm_api.routes.base import get, post

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
PUBLIC = {"public": True}
Query = FromQuery[str]
StateQuery = Annotated[str, QueryParameter(name="state")]
NextQuery = Annotated[str, QueryParameter(name="next")]  # ``state`` is a name Litestar reserves


OIDC_COOKIE = "nexmdm_oidc"


def _new_csrf(request: Request[Any, Any, Any]) -> tuple[str, Cookie | None]:
    """The CSRF token a new session is bound to, and the cookie that carries it: a new one, so that a token the
    browser held before signing in (possibly planted there) is not the session's. A GET whose browser has no
    CSRF cookie yet gets the one Litestar's middleware issues with this response (two would collide)."""
    if request.method == "GET" and session.CSRF_COOKIE not in request.cookies:
        return str(ScopeState.from_scope(request.scope).csrf_token), None
    token = generate_csrf_token(request.app.state.csrf_secret)
    secure = request.app.state.settings.public_url.startswith("https://")
    return token, Cookie(
        key=session.CSRF_COOKIE, value=token, path=PREFIX, secure=secure, httponly=True, samesite="lax"
    )


def _signed_in(
    request: Request[Any, Any, Any], secret: str, csrf: Cookie | None, where: str = f"{PREFIX}/"
) -> Response[Any]:
    response: Response[Any] = Redirect(where, status_code=303)
    response.set_cookie(session.session_cookie(request, secret))
    if csrf is not None:
        response.set_cookie(csrf)
    return response


def _next(value: str | None) -> str:
    """Only a console path (never another site: ``//evil.example`` is not a path)."""
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"


def _signin_page(request: Request[Any, Any, Any], error: str | None = None, status: int = 200) -> Template:
    settings = request.app.state.settings
    return Template(
        "signin.html",
        context={"oidc": bool(settings.oidc_issuer), "error": error, "next": _next(request.query_params.get("next"))},
        status_code=status,
    )


def _throttle(request: Request[Any, Any, Any]) -> None:
    """A sign-in begun, or a link refused, counts for its address in the failed-authentication limiter
    (``NEXMDM_AUTH_FAILURE_LIMIT`` in ``NEXMDM_AUTH_FAILURE_WINDOW_SECONDS``, under a key of its own): beginning
    an OpenID Connect sign-in writes a row before anyone is known, and an address may not write them without
    end. Over the limit: 429."""
    wait = request.app.state.auth_limiter.fail(f"console-sign-in:{client_key(client_ip(request))}")
    if wait is not None:
        raise rate_limited("too many sign-ins from this address; try again later", wait)


def _redirect_uri(request: Request[Any, Any, Any]) -> str:
    """Fixed by ``NEXMDM_PUBLIC_URL`` (required with an identity provider), never by the request's Host header."""
    return f"{request.app.state.settings.public_url}{PREFIX}/auth/callback"


class SignInController(Controller):
    """Sign-in page, one-time links, OpenID Connect, sign-out."""

    path = PREFIX
    include_in_schema = False

    @get("/signin", opt=PUBLIC)
    def signin(self, request: Request[Any, Any, Any]) -> Template:
        return _signin_page(request)

    @get("/auth/link", opt=PUBLIC)
    def link_page(self) -> Template:
        """The link's page; its token is in the URL's fragment, which ``static/link.js`` puts in the form."""
        return Template("link.html")

    @post("/auth/link", opt={**PUBLIC, "body": "form"}, status_code=303)
    def use_link(self, request: Request[Any, Any, Any], db: DB, data: Form) -> Response[Any]:
        settings = request.app.state.settings
        token, csrf = _new_csrf(request)
        try:
            secret, _ = people.redeem_link(
                db, settings, data.get("token", ""), address=client_ip(request), csrf_token=token
            )
        except InvalidCredentials as exc:
            db.rollback()
            request.app.state.audit_buffer.add("user:unknown", "console.sign_in", client_ip(request))
            _throttle(request)
            return _signin_page(request, exc.message, 401)
        return _signed_in(request, secret, csrf)

    @get("/auth/login", opt=PUBLIC)
    def oidc_login(self, request: Request[Any, Any, Any], db: DB, next_page: NextQuery = "") -> Response[Any]:
        from nexmdm_api.console.oidc import new_nonce, new_verifier

        provider = request.app.state.get("oidc")
        if provider is None:
            return _signin_page(request, "no identity provider is configured (NEXMDM_OIDC_ISSUER)", 404)
        _throttle(request)
        verifier, nonce, browser = new_verifier(), new_nonce(), secrets.token_urlsafe(32)
        state = people.begin_oidc(db, code_verifier=verifier, nonce=nonce, browser=browser, next_page=_next(next_page))
        try:
            url = provider.authorization_url(_redirect_uri(request), state, verifier, nonce)
        except InvalidCredentials as exc:
            return _signin_page(request, exc.message, 502)
        response: Response[Any] = Redirect(url, status_code=302)
        # the callback is taken from this browser only (SameSite=Lax: sent on the provider's redirect back)
        response.set_cookie(
            Cookie(
                key=OIDC_COOKIE,
                value=browser,
                path=f"{PREFIX}/auth",
                secure=session.secure_cookies(request),
                httponly=True,
                samesite="lax",
                max_age=int(people.LINK_MINUTES * 60),
            )
        )
        return response

    @get("/auth/callback", opt=PUBLIC)
    def oidc_callback(
        self, request: Request[Any, Any, Any], db: DB, oidc_state: StateQuery = "", code: Query = "", error: Query = ""
    ) -> Response[Any]:
        provider = request.app.state.get("oidc")
        settings = request.app.state.settings
        address = client_ip(request)
        try:
            if provider is None or error or not oidc_state or not code:
                raise InvalidCredentials(f"the sign-in did not finish{f' ({error[:80]})' if error else ''}")
            pending = people.take_oidc(db, oidc_state, request.cookies.get(OIDC_COOKIE) or "")
            claims = provider.claims(_redirect_uri(request), code, pending["code_verifier"], pending["nonce"])
            granted = people.role_from_claims(people.parse_role_rules(settings.oidc_roles), claims)
            email = claims.get("email") or claims.get("preferred_username") or claims.get("sub")
            if granted is None:
                raise InvalidCredentials(f"{email} has no role in NexMDM (NEXMDM_OIDC_ROLES matched nothing)")
            token, csrf = _new_csrf(request)
            secret, _ = people.start_session(
                db,
                settings,
                email=str(email),
                role=granted[0],
                scope=granted[1],
                address=address,
                how="oidc",
                csrf_token=token,
            )
            where = _next(pending.get("next_page"))
        except InvalidCredentials as exc:
            request.app.state.audit_buffer.add("user:unknown", "console.sign_in", address)
            return _signin_page(request, exc.message, 401)
        return _signed_in(request, secret, csrf, where)

    @post("/signout", opt={"body": "form", "action": "console.sign_out"}, status_code=303)
    def signout(self, request: Request[Any, Any, Any], db: DB) -> Response[Any]:
        people.end_session(db, session.person(request), address=client_ip(request))
        response: Response[Any] = Redirect(f"{PREFIX}/signin", status_code=303)
        response.set_cookie(session.session_cookie(request, None))
        return response
