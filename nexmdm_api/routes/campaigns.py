"""Campaigns: one command to many devices, in waves; counts, drill-down, pause, resume and cancel.

Every route here is an admin route (``admin_route``: its least role, checked before the body is read).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, Parameter

from core import approvals
from core import campaigns as fleet
from core.base import ids as campaign_ids
from core.base import validation
from core.base.errors import InvalidArgument
from core.commands.destructive import is_destructive
from nexmdm_api.auth import admin_actor, admin_route, require_action_role, scope_of
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import IdempotencyKeyHeader, allow
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.approvals import approval_response, forbid_unless_admin
from nexmdm_api.routes.base import get, post
from nexmdm_api.routes.commands import idempotency_key
from nexmdm_api.schemas import DEVICE_ID_PATTERN, convert
from nexmdm_api.schemas_admin import ApprovalOut, CampaignFailuresOut, FailedDeviceOut, FailedDevicePage
from nexmdm_api.schemas_fleet import (
    CampaignDeviceOut,
    CampaignDevicePage,
    CampaignIn,
    CampaignOut,
    CampaignPage,
    ResumeIn,
)

#: POST /v1/campaigns accepts up to 10,000 device ids
MAX_CAMPAIGN_BODY_BYTES = 2 * 1024 * 1024
CAMPAIGN_ID_PATTERN = campaign_ids.PATTERN
CampaignIdPath = Annotated[
    str, Parameter(description="the campaign's id", schema_extra={"pattern": CAMPAIGN_ID_PATTERN})
]


def _campaign_id(value: str) -> str:
    if not re.fullmatch(CAMPAIGN_ID_PATTERN, value):
        raise InvalidArgument(f"{value[:40]!r} is not a campaign id (cmp_ + 26 characters)", field="campaign_id")
    return value


def _reachable(request: Request[Any, Any, Any], db: DB, value: str) -> str:
    """The path's campaign id, if the request's scope reaches it (``core.campaigns.require_in_scope``)."""
    return fleet.require_in_scope(db, _campaign_id(value), scope_of(request))


def _out(request: Request[Any, Any, Any], campaign: dict[str, Any]) -> CampaignOut:
    settings = request.app.state.settings
    campaign["counts"]["fcm_configured"] = bool(settings.fcm_credentials)
    return convert(campaign, CampaignOut)


def _action_route(path: str, summary: str) -> HTTPRouteHandler:
    """A campaign's state change: its path, its summary, the rest alike."""
    return post(
        path,
        summary=summary,
        status_code=200,
        **admin_route("operator", scoped=True),
        responses=problems(400, 401, 403, 404, 409, 422, 429),
    )


class CampaignController(Controller):
    """Campaigns: list, create, one with its counts, its targets, pause, resume, cancel."""

    path = "/v1/campaigns"
    tags = ["admin"]
    allowed = allow(path)  # GET and POST share the path

    @get(
        "/",
        summary="List campaigns, newest first",
        description="A scoped key lists the campaigns created under its own scope only.",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_campaigns(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        limit: Limit = 50,
        cursor: Annotated[
            str | None, Parameter(description="`next_cursor` of the previous page", pattern=CAMPAIGN_ID_PATTERN)
        ] = None,
    ) -> CampaignPage:
        before = _campaign_id(cursor) if cursor else None
        rows, next_cursor = keyset_page(
            lambda n: fleet.list_campaigns(db, limit=n, before=before, scope=scope_of(request)), limit, "id"
        )
        return CampaignPage(items=[_out(request, r) for r in rows], next_cursor=next_cursor)

    @post(
        "/",
        summary="Send one command to many devices",
        description=(
            "Idempotent by `Idempotency-Key` (the same rules as commands). Exactly one of `selector` (`all` for "
            "every device) or `device_ids` (at most 10,000). The targets are the matching devices now (a "
            "snapshot); each gets its own command `{campaign_id}:{device_id}`, released in `waves`. With "
            "`success_when` (a selector) a target succeeds once its device matches it after the ack (else it "
            "fails with `outcome_timeout` after `outcome_timeout_seconds`, default 3600); devices that already "
            "match are `skipped` without a command; gates count outcomes. A scoped key's snapshot takes only devices "
            "inside its scope (`all` is all of the scope) and the campaign records it. "
            "A destructive action (`wipe`) needs an admin key and is answered with an approval "
            "(`Location: /v1/approvals/{id}`); the campaign waits in `awaiting_approval` until its release."
        ),
        status_code=202,
        request_max_body_size=MAX_CAMPAIGN_BODY_BYTES,
        **admin_route("operator", scoped=True, body="json"),
        responses={
            200: ResponseSpec(CampaignOut, description="A replay of an earlier request with the same key and body"),
            **problems(400, 401, 403, 404, 413, 415, 422, 429),
        },
    )
    def create_campaign(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        data: JSONBody[CampaignIn],
        key: IdempotencyKeyHeader = None,
    ) -> Response[CampaignOut | ApprovalOut]:
        require_action_role(request, data.action)
        waves = None
        if data.waves is not None:
            waves = {
                k: getattr(data.waves, k) for k in data.waves.__struct_fields__ if getattr(data.waves, k) is not None
            }
            if not waves:
                raise InvalidArgument("waves need exactly one of size or percent", field="waves")
        body: dict[str, Any] = {
            "idempotency_key": idempotency_key(key),
            "action": data.action,
            "payload": data.payload,
            "selector": data.selector,
            "device_ids": data.device_ids,
            "waves": waves,
            "expires_in_seconds": data.expires_in_seconds,
            "note": data.note,
            "success_when": data.success_when,
            "outcome_timeout_seconds": data.outcome_timeout_seconds,
            "actor": admin_actor(request),
            "scope": scope_of(request),
        }
        if is_destructive(data.action, request.app.state.settings):
            forbid_unless_admin(request, data.action)
            asked, approval = approvals.request_campaign(db, request.app.state.settings, **body)
            return approval_response(asked, approval)
        created, campaign = fleet.create_campaign(db, request.app.state.settings, **body)
        if created:
            return Response(_out(request, campaign), status_code=202)
        return Response(_out(request, campaign), status_code=200, headers={"Idempotent-Replayed": "true"})

    @get(
        "/{campaign_id:str}",
        summary="One campaign with its counts",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def get_campaign(self, request: Request[Any, Any, Any], db: DB, campaign_id: CampaignIdPath) -> CampaignOut:
        return _out(request, fleet.get_campaign(db, _reachable(request, db, campaign_id)))

    @get(
        "/{campaign_id:str}/devices",
        summary="A campaign's targets (in one state), by device id",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def campaign_devices(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        campaign_id: CampaignIdPath,
        status: Annotated[
            str | None,
            Parameter(
                description="skipped, queued, pending, acked, succeeded, failed, expired or cancelled",
                pattern=r"^[a-z]{1,16}$",
            ),
        ] = None,
        limit: Limit = 100,
        cursor: Annotated[
            str | None,
            Parameter(description="`next_cursor` of the previous page (a device id)", pattern=DEVICE_ID_PATTERN),
        ] = None,
    ) -> CampaignDevicePage:
        after = validation.device_id(cursor, field="cursor") if cursor else None
        campaign = _reachable(request, db, campaign_id)
        rows, next_cursor = keyset_page(
            lambda n: fleet.campaign_devices(db, campaign, status=status, limit=n, after=after), limit, "device_id"
        )
        return CampaignDevicePage(items=[convert(r, CampaignDeviceOut) for r in rows], next_cursor=next_cursor)

    @get(
        "/{campaign_id:str}/failures",
        summary="Why a campaign's targets failed: groups by reason, model and OS version",
        description=(
            "Failed targets grouped by (reason, model, os_version), the largest first, each with three sample "
            "device ids. The reason is the outcome's (`outcome_timeout`), `expired`, the ack's error code, or "
            "`failed`; model and OS version are `unknown` when the device never reported them."
        ),
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def campaign_failures(
        self, request: Request[Any, Any, Any], db: DB, campaign_id: CampaignIdPath
    ) -> CampaignFailuresOut:
        return convert(fleet.failure_groups(db, _reachable(request, db, campaign_id)), CampaignFailuresOut)

    @get(
        "/{campaign_id:str}/failures/devices",
        summary="A campaign's failed targets (of one group), by device id, with the ack's detail",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def campaign_failed_devices(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        campaign_id: CampaignIdPath,
        reason: Annotated[
            str | None, Parameter(description="a group's reason", pattern=r"^[A-Za-z0-9_]{1,32}$")
        ] = None,
        model: Annotated[str | None, Parameter(description="a group's model", max_length=128)] = None,
        os_version: Annotated[str | None, Parameter(description="a group's OS version", max_length=64)] = None,
        limit: Limit = 100,
        cursor: Annotated[
            str | None,
            Parameter(description="`next_cursor` of the previous page (a device id)", pattern=DEVICE_ID_PATTERN),
        ] = None,
    ) -> FailedDevicePage:
        after = validation.device_id(cursor, field="cursor") if cursor else None
        campaign = _reachable(request, db, campaign_id)
        rows, next_cursor = keyset_page(
            lambda n: fleet.failed_devices(
                db, campaign, reason=reason, model=model, os_version=os_version, limit=n, after=after
            ),
            limit,
            "device_id",
        )
        return FailedDevicePage(items=[convert(r, FailedDeviceOut) for r in rows], next_cursor=next_cursor)

    @_action_route("/{campaign_id:str}/pause", "Pause a campaign (no further waves)")
    def pause_campaign(self, request: Request[Any, Any, Any], db: DB, campaign_id: CampaignIdPath) -> CampaignOut:
        return _out(request, fleet.pause(db, _reachable(request, db, campaign_id), actor=admin_actor(request)))

    @post(
        "/{campaign_id:str}/resume",
        summary="Resume a paused or halted campaign",
        description="A halted campaign needs new thresholds or `ignore_failures: true` (else 409). Body optional.",
        status_code=200,
        **admin_route("operator", scoped=True),
        responses=problems(400, 401, 403, 404, 409, 413, 415, 422, 429),
    )
    def resume_campaign(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        campaign_id: CampaignIdPath,
        data: JSONBody[ResumeIn | None] = None,
    ) -> CampaignOut:
        body = data or ResumeIn()
        return _out(
            request,
            fleet.resume(
                db,
                _reachable(request, db, campaign_id),
                ignore_failures=body.ignore_failures,
                min_success_pct=body.min_success_pct,
                max_failure_pct=body.max_failure_pct,
                actor=admin_actor(request),
            ),
        )

    @_action_route("/{campaign_id:str}/cancel", "Cancel a campaign and its queued and pending commands")
    def cancel_campaign(self, request: Request[Any, Any, Any], db: DB, campaign_id: CampaignIdPath) -> CampaignOut:
        return _out(request, fleet.cancel(db, _reachable(request, db, campaign_id), actor=admin_actor(request)))
