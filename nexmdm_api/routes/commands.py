"""Commands: admins dispatch them (idempotently), devices fetch and acknowledge their own."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, Parameter

from core import approvals
from core.base import ids as campaign_ids
from core.base import validation
from core.base.errors import InvalidArgument
from core.commands import dispatches
from core.commands.destructive import is_destructive
from core.models import COMMAND_STATUSES
from nexmdm_api.auth import DEVICE_SECURITY, admin_actor, admin_route, require_action_role, require_device
from nexmdm_api.db import DB
from nexmdm_api.errors import ApiError, problems
from nexmdm_api.metrics import count_command
from nexmdm_api.openapi import DeviceIdPath, IdempotencyKeyHeader, RequestIdPath
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.approvals import approval_response, forbid_unless_admin
from nexmdm_api.routes.base import get, post
from nexmdm_api.schemas import (
    DEVICE_ID_PATTERN,
    AckIn,
    CommandIn,
    Dispatch,
    DispatchWithHistory,
    PendingCommand,
    PendingCommandsOut,
    convert,
)
from nexmdm_api.schemas_admin import ApprovalOut, DispatchPage
from nexmdm_api.scoping import device_in_scope, devices_in_scope


def request_id_from_path(value: str) -> str:
    """A request id in a path: anything malformed is 400 (contract: "Identifiers and values")."""
    try:
        return validation.request_id(value)
    except InvalidArgument as exc:
        raise ApiError(400, exc.message, code="invalid_request_id") from None


def idempotency_key(raw: str | None) -> str:
    if raw is None or not raw.strip():
        raise ApiError(400, "the Idempotency-Key header is required", code="idempotency_key_missing")
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':  # draft-ietf-httpapi-idempotency-key: an sf-string
        key = key[1:-1]
    try:
        return validation.request_id(key, field="Idempotency-Key")
    except InvalidArgument as exc:
        raise ApiError(400, exc.message, code="idempotency_key_invalid") from None


class DeviceCommandController(Controller):
    """Commands for the calling device: fetch its pending ones, acknowledge one."""

    path = "/v1/commands"
    tags = ["device"]

    @get(
        "/pending",
        summary="The calling device's pending commands",
        description="Commands neither acknowledged nor expired, oldest first: the fallback when a push was lost.",
        security=DEVICE_SECURITY,
        opt={"auth": "device", "readonly": True, "closed_query": True},
        responses=problems(400, 401, 422, 429),
    )
    def pending_commands(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        limit: Annotated[int, Parameter(ge=1, le=500, description="at most this many")] = 100,
    ) -> PendingCommandsOut:
        device = require_device(request, db)
        rows = dispatches.pending_commands(db, device.id, limit=limit)
        return PendingCommandsOut(items=[convert(row, PendingCommand) for row in rows])

    @post(
        "/{request_id:str}/ack",
        summary="Acknowledge one of the calling device's commands",
        description=(
            "`completed` marks the command `acked`, `failed` marks it `failed`. A completed ack may carry a `result` "
            "checked against the action's result schema, a failed one an `error_code`; a result that fails its schema "
            "is 422 and the command stays pending. The same acknowledgement again is 200; a conflicting one is 409; "
            "another device's command is 404."
        ),
        status_code=200,
        security=DEVICE_SECURITY,
        opt={"auth": "device", "body": "json"},
        responses=problems(400, 401, 404, 409, 413, 415, 422, 429),
    )
    def ack_command(
        self, request: Request[Any, Any, Any], db: DB, request_id: RequestIdPath, data: JSONBody[AckIn]
    ) -> Dispatch:
        device = require_device(request, db)
        _, dispatch = dispatches.ack_command(
            db,
            device_id=device.id,
            request_id=request_id_from_path(request_id),
            status=data.status,
            detail=data.detail,
            result=data.result,
            error_code=data.error_code,
            settings=request.app.state.settings,
        )
        return convert(dispatch, Dispatch)


class CommandController(Controller):
    """Commands for admins: dispatch one (idempotently), read, cancel, list."""

    path = "/v1"
    tags = ["admin"]

    @post(
        "/devices/{device_id:str}/commands",
        summary="Dispatch a command to a device",
        description=(
            "Idempotent by the `Idempotency-Key` header: the first call is 202 with the new dispatch; a repeat "
            "with the same device, action and payload is 200 with the same dispatch and `Idempotent-Replayed: "
            "true`; the same key with anything different is 422. The command stays `pending` until the device "
            "acknowledges it. A destructive action (`wipe`) needs an admin key and is answered with an approval "
            "(`awaiting_approval`, `Location: /v1/approvals/{id}`): no command exists before its release."
        ),
        status_code=202,
        **admin_route("operator", scoped=True, body="json", action="command.create"),
        responses={
            200: ResponseSpec(Dispatch, description="A replay of an earlier request with the same key and body"),
            **problems(400, 401, 403, 404, 409, 413, 415, 422, 429),
        },
    )
    def create_command(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        device_id: DeviceIdPath,
        data: JSONBody[CommandIn],
        key: IdempotencyKeyHeader = None,
    ) -> Response[Dispatch | ApprovalOut]:
        require_action_role(request, data.action)
        command: dict[str, Any] = {
            "request_id": idempotency_key(key),
            "device_id": device_in_scope(request, db, device_id),
            "action": data.action,
            "payload": data.payload,
            "actor": admin_actor(request),
        }
        if is_destructive(data.action, request.app.state.settings):
            forbid_unless_admin(request, data.action)
            asked, approval = approvals.request_command(db, request.app.state.settings, **command)
            return approval_response(asked, approval)
        created, dispatch = dispatches.create_command(db, request.app.state.settings, **command)
        count_command("created" if created else "replayed")
        if created:
            return Response(convert(dispatch, Dispatch), status_code=202)
        return Response(convert(dispatch, Dispatch), status_code=200, headers={"Idempotent-Replayed": "true"})

    @get(
        "/commands/{request_id:str}",
        summary="One dispatch with its status history",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 404, 429),
    )
    def get_command(self, request: Request[Any, Any, Any], db: DB, request_id: RequestIdPath) -> DispatchWithHistory:
        wanted = dispatches.require_within(db, request_id_from_path(request_id), devices_in_scope(request))
        return convert(dispatches.get_dispatch(db, wanted), DispatchWithHistory)

    @post(
        "/commands/{request_id:str}/cancel",
        summary="Cancel a pending command",
        description=(
            "It leaves the device's pending list at once; a late ack is 409. Cancelling it again is 200; a command "
            "that already finished otherwise is 409. The same rules as `nexmdm dispatches cancel`."
        ),
        status_code=200,
        **admin_route("operator", scoped=True, action="command.cancel"),
        responses=problems(400, 401, 403, 404, 409, 429),
    )
    def cancel_command(self, request: Request[Any, Any, Any], db: DB, request_id: RequestIdPath) -> Dispatch:
        wanted = dispatches.require_within(db, request_id_from_path(request_id), devices_in_scope(request))
        _, dispatch = dispatches.cancel_command(db, wanted, actor=admin_actor(request))
        return convert(dispatch, Dispatch)

    @get(
        "/commands",
        summary="List commands, newest first",
        description=(
            "Filters combine (AND); `next_cursor` is null on the last page. A scoped key lists the commands of its "
            "scope's devices only."
        ),
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_commands(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        limit: Limit = 100,
        cursor: Annotated[
            str | None, Parameter(description="`next_cursor` of the previous page", pattern=r"^[0-9]{1,18}$")
        ] = None,
        device_id: Annotated[
            str | None, Parameter(description="only this device's commands", pattern=DEVICE_ID_PATTERN)
        ] = None,
        status: Annotated[Literal[COMMAND_STATUSES] | None, Parameter(description="only this status")] = None,  # type: ignore[valid-type]
        campaign_id: Annotated[
            str | None, Parameter(description="only this campaign's commands", pattern=campaign_ids.PATTERN)
        ] = None,
    ) -> DispatchPage:
        rows, next_cursor = keyset_page(
            lambda n: dispatches.list_dispatches(
                db,
                device_id=device_id,
                status=status,
                campaign_id=campaign_id,
                before_id=int(cursor) if cursor else None,
                limit=n,
                within=devices_in_scope(request),
            ),
            limit,
            "id",
        )
        return DispatchPage(items=[convert(r, Dispatch) for r in rows], next_cursor=next_cursor)
