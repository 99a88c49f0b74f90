"""The app factory: ``create_app(settings)`` builds everything; nothing happens at import time."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Request, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig

from core.base.settings import Settings, get_settings
from core.commands.catalogue import catalogue_for
from core.storage.migrations import head_revision
from nexmdm_api import metrics
from nexmdm_api.auditbuffer import AuditBuffer
from nexmdm_api.auth import authorize_admin, precheck
from nexmdm_api.background import background_lifespan
from nexmdm_api.bodydeadline import BodyDeadline
from nexmdm_api.console import console_routers, console_state, csrf_secret, template_config
from nexmdm_api.db import database_lifespan, provide_db
from nexmdm_api.errors import ApiError, problem_details_plugin
from nexmdm_api.forwarded import ForwardedClient
from nexmdm_api.jsonbody import check_json_body
from nexmdm_api.openapi import (
    ActionSchemasPlugin,
    ActionsSchemaPlugin,
    ClosedStructSchemaPlugin,
    MetricsController,
    check_json_types,
    check_query,
)
from nexmdm_api.ratelimit import FailureLimiter, TokenBucket
from nexmdm_api.routes import (
    actions,
    apk,
    apk_admin,
    approvals,
    audit,
    campaigns,
    commands,
    devices,
    enroll,
    health,
    heartbeats,
    inventory,
    keys,
    labels,
    locations,
    profiles,
    tokens,
    webhooks,
)
from nexmdm_api.shared_limits import RedisLink, SharedFailureLimiter, SharedTokenBucket

#: every endpoint but the APK upload accepts at most this much body (heartbeats are tiny)
MAX_BODY_BYTES = 64 * 1024
API_VERSION = "1.0.0"
#: request duration buckets: Prometheus' defaults plus 0.15 s, the heartbeat latency goal that
#: deploy/prometheus/alerts.yml alerts on (a quantile at a bucket boundary is exact, not interpolated)
REQUEST_BUCKETS: list[str | float] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


async def check_request(request: Request[Any, Any, Any]) -> None:
    """Before Litestar reads anything: 401 without a bearer token of the right kind (no database); on
    admin endpoints the key and its role (401/403, ``nexmdm_api.auth.authorize_admin``); then 415 for a
    body of the wrong type and 400 for a missing one, or one nested too deeply, not UTF-8 or with a
    repeated key (``nexmdm_api.jsonbody``)."""
    await precheck(request)
    if request.route_handler.opt.get("auth") == "admin":
        # the key and its role, with the failed-auth limiter, before a byte of the body is read (issue #11:
        # a bad key used to cost a 512 MB upload first)
        await authorize_admin(request)
    check_query(request)
    kind, optional = body_kind(request.route_handler)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "json":
        if optional and not await request.body():
            return  # an optional body left out: the handler's default applies
        await _check_json(request, media_type)
    elif kind == "multipart" and media_type != "multipart/form-data":
        raise ApiError(415, "the body must be multipart/form-data")


def body_kind(handler: Any) -> tuple[str | None, bool]:
    """What body a route takes (``opt["body"]``, else JSON whenever its handler has a ``data`` parameter, so
    that no route can skip the checks by forgetting to declare it: issue #21) and whether it is optional."""
    data = handler.parsed_fn_signature.parameters.get("data")
    kind = handler.opt.get("body") or ("json" if data is not None else None)
    return kind, bool(data is not None and data.is_optional)


async def _check_json(request: Request[Any, Any, Any], media_type: str) -> None:
    if not (
        media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
    ):
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    body = await request.body()
    if not body:
        raise ApiError(400, "the request body is empty; send a JSON object", code="empty_body")
    check_json_body(body)
    check_json_types(request, body)


async def read_headers(message: Any, scope: Any) -> None:
    """On admin listings: where they were read (``NexMDM-Read-From: replica|primary``), how far behind
    the replica was (``NexMDM-Replica-Lag``, seconds) and why the primary answered instead."""
    if message["type"] != "http.response.start":
        return
    route = scope.get("state", {}).get("read_route")
    if route is None:
        return
    headers = message.setdefault("headers", [])
    headers.append((b"nexmdm-read-from", route.source.encode()))
    if route.lag_seconds is not None:
        headers.append((b"nexmdm-replica-lag", f"{route.lag_seconds:.3f}".encode()))
        metrics.set_replica_lag(route.lag_seconds)
    if route.reason:
        headers.append((b"nexmdm-read-reason", route.reason.encode()))


def openapi_config() -> OpenAPIConfig:
    def bearer(description: str) -> SecurityScheme:
        return SecurityScheme(type="http", scheme="bearer", description=description)

    return OpenAPIConfig(
        title="NexMDM API",
        version=API_VERSION,
        description="Device and admin API of NexMDM. Errors are RFC 9457 problem details (application/problem+json).",
        path="/schema",
        components=Components(
            security_schemes={
                "enrollmentToken": bearer("An enrollment token (nxe_...), created with `nexmdm tokens create`"),
                "deviceToken": bearer("A device token (nxd_...), issued by POST /v1/enroll"),
                "adminKey": bearer("An admin API key (nxa_...), created with `nexmdm keys create`"),
            },
        ),
    )


def limiters(settings: Settings) -> dict[str, Any]:
    """The failed-auth and heartbeat limiters: in Redis with ``NEXMDM_REDIS_URL`` (shared), else per process."""
    auth, window = settings.auth_failure_limit, settings.auth_failure_window_seconds
    rate, burst = settings.heartbeat_rate_per_minute, settings.heartbeat_burst
    if not settings.redis_url:
        return {"auth_limiter": FailureLimiter(auth, window), "heartbeat_limiter": TokenBucket(rate, burst)}
    link = RedisLink(settings.redis_url, settings.redis_key_prefix)  # connects on first use, not here
    return {
        "redis": link,
        "auth_limiter": SharedFailureLimiter(link, auth, window),
        "heartbeat_limiter": SharedTokenBucket(link, rate, burst),
    }


async def close_redis(app: Litestar) -> None:
    link = app.state.get("redis")
    if link is not None:
        await link.close()


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API. The engine is created when the app starts (lifespan) and disposed when it stops."""
    settings = settings or get_settings()
    logging.getLogger("nexmdm").setLevel(settings.log_level.upper())
    catalogue = catalogue_for(settings)  # a bad NEXMDM_ACTION_SCHEMAS file fails here, at start
    console_secret = csrf_secret(settings)  # one key for the CSRF middleware and the tokens a sign-in issues
    prometheus = PrometheusConfig(
        app_name="nexmdm",
        prefix="nexmdm",
        group_path=True,
        exclude=["^/metrics$"],
        buckets=REQUEST_BUCKETS,
    )
    uploads = Router(
        path="/",
        # the upload's own body limit (its list and remove share the controller and take no body)
        route_handlers=[apk_admin.ApkBuildController],
        request_max_body_size=settings.apk_upload_max_mb * 1024 * 1024,
    )
    return Litestar(
        route_handlers=[
            enroll.EnrollController,
            heartbeats.HeartbeatController if settings.is_sqlite else heartbeats.BatchedHeartbeatController,
            commands.DeviceCommandController,
            commands.CommandController,
            actions.ActionController,
            locations.LocationController,
            locations.DeviceLocationController,
            devices.DeviceController,
            inventory.InventoryController,
            inventory.DeviceInventoryController,
            inventory.AppController,
            profiles.ProfileController,
            profiles.ProfileNameController,
            profiles.DeviceEffectiveController,
            profiles.ComplianceController,
            profiles.DeviceProfileController,
            labels.LabelController,
            campaigns.CampaignController,
            approvals.ApprovalController,
            tokens.TokenController,
            keys.KeyController,
            audit.AuditController,
            webhooks.WebhookController,
            apk.ApkController,
            apk_admin.ApkDownloadController,
            uploads,
            health.HealthController,
            MetricsController,
            *console_routers(settings, console_secret),
        ],
        dependencies={"db": Provide(provide_db)},
        before_request=check_request,
        before_send=[read_headers],
        on_shutdown=[close_redis],
        lifespan=[database_lifespan(settings), background_lifespan(settings)],
        state=State(
            {
                "settings": settings,
                "head_revision": head_revision(settings.database_url),
                **limiters(settings),
                "audit_buffer": AuditBuffer(),
                **console_state(settings, console_secret),
            }
        ),
        plugins=[
            problem_details_plugin(),
            ActionsSchemaPlugin(catalogue.names()),
            ActionSchemasPlugin(catalogue),
            ClosedStructSchemaPlugin(),
        ],
        middleware=[
            # the client behind a trusted proxy, only ever an address (``nexmdm serve`` leaves it to the app)
            *(
                [DefineMiddleware(ForwardedClient, trusted=settings.forwarded_allow_ips)]
                if settings.forwarded_allow_ips
                else []
            ),
            prometheus.middleware,
            DefineMiddleware(
                BodyDeadline,
                seconds=settings.request_body_timeout_seconds,
                upload_seconds=settings.apk_upload_timeout_seconds,
            ),
        ],
        openapi_config=openapi_config(),
        template_config=template_config(),
        request_max_body_size=MAX_BODY_BYTES,
    )
