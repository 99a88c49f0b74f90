"""The browser console at ``/console/``: server-rendered pages over the same core and role checks as the API.

Jinja2 templates (``templates/``, autoescaped), htmx for the live parts, served from ``static/`` by NexMDM
itself (no CDN, no build step); every listing works without JavaScript. The console's routes form one
``Router`` with its own ``before_request`` (the session check, ``session.check_person``, in place of the
API's bearer checks), Litestar's CSRF middleware (a signed double-submit token on every form), the
security headers, and errors shown as pages. docs/console.md describes it for operators.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from core.base.settings import Settings
from nexmdm_api.auth import client_ip
from nexmdm_api.console import approvals, campaigns, fleet, profiles, signin
from nexmdm_api.console.session import CSRF_COOKIE, PREFIX, SECURITY_HEADERS, check_person
from nexmdm_api.console.views import register_filters
from nexmdm_api.errors import to_problem

HERE = Path(__file__).parent


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=register_filters)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Any error of a console route as a page (the status and message of the API's problem details). A form
    refused for its CSRF token (raised by the middleware, before the session is known) is audited as a
    ``denied`` ``console.csrf``."""
    if isinstance(exc, PermissionDeniedException) and "CSRF" in str(exc.detail):
        request.app.state.audit_buffer.add("user:unknown", "console.csrf", client_ip(request))
    problem = to_problem(exc)
    return Template(
        "error.html",
        context={"status": problem.status_code, "detail": problem.detail},
        status_code=problem.status_code,
        headers={h.name: h.value for h in SECURITY_HEADERS},  # response_headers miss an exception handler's page
    )


def csrf_secret(settings: Settings) -> str:
    """The key that signs CSRF tokens: ``NEXMDM_CONSOLE_SECRET``, else one per process (one app)."""
    return settings.console_secret or secrets.token_urlsafe(32)


def console_state(settings: Settings, secret: str) -> dict[str, Any]:
    """What the console keeps on ``app.state``: the identity provider (when one is configured) and the CSRF
    tokens' key (a sign-in issues a new token: ``signin``)."""
    if not settings.oidc_issuer:
        return {"oidc": None, "csrf_secret": secret}
    from nexmdm_api.console.oidc import Provider  # Authlib and requests only when people sign in with OIDC

    return {"oidc": Provider(settings), "csrf_secret": secret}


def console_routers(settings: Settings, secret: str) -> list[Router]:
    """The console's pages and its static assets."""
    csrf = CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        cookie_path=PREFIX,
        cookie_httponly=True,
        cookie_secure=settings.public_url.startswith("https://"),
        cookie_samesite="lax",
        header_name="x-csrftoken",
    )
    pages = Router(
        path="/",
        route_handlers=[
            signin.SignInController,
            fleet.FleetPages,
            campaigns.CampaignPages,
            profiles.ProfilePages,
            approvals.ApprovalPages,
        ],
        before_request=check_person,
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf)],
        response_headers=SECURITY_HEADERS,
        exception_handlers={Exception: _error_page},
        include_in_schema=False,
    )
    assets = create_static_files_router(
        path=f"{PREFIX}/static",
        directories=[HERE / "static"],
        name="console_static",
        include_in_schema=False,
        after_request=_asset_headers,
        cache_control=CacheControlHeader(max_age=3600),
    )
    return [pages, assets]


async def _asset_headers(response: Response[Any]) -> Response[Any]:
    for header in SECURITY_HEADERS:
        if header.name != "Cache-Control":
            response.headers[header.name] = header.value or ""
    return response
