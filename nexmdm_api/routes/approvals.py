"""Approvals of destructive actions: list, read, approve, deny, cancel (docs/approvals.md).

A refused decision (by the admin who asked, or on a closed approval) is answered with its problem (403 or
409) *after* its audit row: the handler returns the problem instead of raising it, so the request's
transaction commits that row (``nexmdm_api.db`` rolls back whatever raised).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter, QueryParameter

from core import approvals
from core.base import ids
from core.base.errors import InvalidArgument, NexMDMError
from core.models import APPROVAL_STATES
from nexmdm_api.auth import admin_actor, admin_route, client_ip, require_admin
from nexmdm_api.db import DB
from nexmdm_api.errors import ApiError, problems, to_problem
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import get, post
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_admin import ApprovalOut, ApprovalPage

ApprovalIdPath = Annotated[
    str, Parameter(description="the approval's id", schema_extra={"pattern": ids.APPROVAL_PATTERN})
]


def _approval_id(value: str) -> str:
    if not re.fullmatch(ids.APPROVAL_PATTERN, value):
        raise InvalidArgument(f"{value[:40]!r} is not an approval id (apr_ + 26 characters)", field="approval_id")
    return value


def forbid_unless_admin(request: Request[Any, Any, Any], what: str) -> None:
    """A destructive action is asked for by an admin only: 403 for a lower role, counted as a refusal."""
    key = require_admin(request)
    if key["role"] != "admin":
        request.app.state.audit_buffer.add(f"key:{key['name']}", "approval.request", client_ip(request))
        raise ApiError(
            403,
            f"{what} is destructive: only an admin may ask for it (the admin key {key['name']!r} is {key['role']})",
            code="insufficient_role",
        )


def approval_response(created: bool, approval: dict[str, Any]) -> Response[Any]:
    """The answer to a destructive command or campaign: its approval (202, or 200 for a replay of its key)."""
    headers = {"Location": f"/v1/approvals/{approval['id']}"} | ({} if created else {"Idempotent-Replayed": "true"})
    return Response(convert(approval, ApprovalOut), status_code=202 if created else 200, headers=headers)


def _decided(request: Request[Any, Any, Any], decide: Callable[[], dict[str, Any]]) -> Response[ApprovalOut]:
    try:
        return Response(convert(decide(), ApprovalOut), status_code=200)
    except approvals.REFUSALS as exc:  # audited in this transaction: answer without raising, so it commits
        refusal: NexMDMError = exc
    return to_problem(refusal).to_response(request)  # type: ignore[return-value]


def _decision_route(path: str, summary: str, role: str, action: str, description: str) -> HTTPRouteHandler:
    return post(
        path,
        summary=summary,
        description=description,
        status_code=200,
        **admin_route(role, action=action),
        responses=problems(400, 401, 403, 404, 409, 422, 429),
    )


class ApprovalController(Controller):
    """Approvals: list, one, approve, deny, cancel."""

    path = "/v1/approvals"
    tags = ["admin"]

    @get(
        "/",
        summary="List approvals of destructive actions, newest first",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_approvals(
        self,
        db: DB,
        limit: Limit = 50,
        cursor: Annotated[
            str | None, Parameter(description="`next_cursor` of the previous page", pattern=ids.APPROVAL_PATTERN)
        ] = None,
        in_state: Annotated[
            Literal[APPROVAL_STATES] | None,  # type: ignore[valid-type]
            QueryParameter(name="state", description="only this state"),
        ] = None,
    ) -> ApprovalPage:
        rows, next_cursor = keyset_page(
            lambda n: approvals.list_approvals(db, state=in_state, limit=n, before=cursor), limit, "id"
        )
        return ApprovalPage(items=[convert(r, ApprovalOut) for r in rows], next_cursor=next_cursor)

    @get(
        "/{approval_id:str}",
        summary="One approval",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def get_approval(self, db: DB, approval_id: ApprovalIdPath) -> ApprovalOut:
        return convert(approvals.get_approval(db, _approval_id(approval_id)), ApprovalOut)

    @_decision_route(
        "/{approval_id:str}/approve",
        "Approve a destructive action (another admin than the one who asked)",
        "admin",
        "approval.approve",
        "The action is released after `NEXMDM_DESTRUCTIVE_DELAY_SECONDS` unless an operator cancels it first. "
        "The admin who asked gets 403 `self_approval_refused` (unless `NEXMDM_ALLOW_SELF_APPROVAL=true`); an "
        "approval that is no longer awaited (decided, cancelled, expired) 409 `approval_closed`. Both are audited.",
    )
    def approve_request(
        self, request: Request[Any, Any, Any], db: DB, approval_id: ApprovalIdPath
    ) -> Response[ApprovalOut]:
        settings, actor, approval = request.app.state.settings, admin_actor(request), _approval_id(approval_id)
        return _decided(request, lambda: approvals.approve(db, settings, approval, actor=actor))

    @_decision_route(
        "/{approval_id:str}/deny",
        "Deny a destructive action",
        "admin",
        "approval.deny",
        "The request ends (a campaign waiting for it is cancelled). One no longer awaited is 409 `approval_closed`.",
    )
    def deny_request(
        self, request: Request[Any, Any, Any], db: DB, approval_id: ApprovalIdPath
    ) -> Response[ApprovalOut]:
        actor, approval = admin_actor(request), _approval_id(approval_id)
        return _decided(request, lambda: approvals.deny(db, approval, actor=actor))

    @_decision_route(
        "/{approval_id:str}/cancel",
        "Cancel a destructive action before its release",
        "operator",
        "approval.cancel",
        "While it awaits approval or during the cooling-off delay after it; once released, denied or expired it "
        "is 409 `approval_closed`.",
    )
    def cancel_request(
        self, request: Request[Any, Any, Any], db: DB, approval_id: ApprovalIdPath
    ) -> Response[ApprovalOut]:
        actor, approval = admin_actor(request), _approval_id(approval_id)
        return _decided(request, lambda: approvals.cancel(db, approval, actor=actor))
