"""Commands: admins dispatch them (idempotently), devices fetch and acknowledge their own."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody, Parameter

from core import dispatches, validation
from core.errors import InvalidArgument
from nexmdm_api.auth import ADMIN_SECURITY, DEVICE_SECURITY, require_admin, require_device
from nexmdm_api.db import DB
from nexmdm_api.errors import ApiError, problems
from nexmdm_api.metrics import count_command
from nexmdm_api.openapi import DeviceIdPath, RequestIdPath
from nexmdm_api.schemas import (
    AckIn,
    CommandIn,
    Dispatch,
    DispatchWithHistory,
    PendingCommand,
    PendingCommandsOut,
    convert,
)

IDEMPOTENCY_KEY_PATTERN = r'^([A-Za-z0-9._~:-]{1,255}|"[A-Za-z0-9._~:-]{1,255}")$'
IDEMPOTENCY_KEY_DOC = (
    "1-255 characters from A-Z a-z 0-9 . _ ~ : - (a structured-header string in double quotes is accepted "
    "too). It becomes the command's request_id; one key names one dispatch, globally."
)


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


@post(
    "/v1/devices/{device_id:str}/commands",
    tags=["admin"],
    summary="Dispatch a command to a device",
    description=(
        "Idempotent by the `Idempotency-Key` header: the first call is 202 with the new dispatch; a repeat "
        "with the same device, action and payload is 200 with the same dispatch and `Idempotent-Replayed: "
        "true`; the same key with anything different is 422. The command stays `pending` until the device "
        "acknowledges it."
    ),
    status_code=202,
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "body": "json"},
    responses={
        200: ResponseSpec(Dispatch, description="A replay of an earlier request with the same key and body"),
        **problems(400, 401, 404, 409, 413, 415, 422, 429),
    },
)
def create_command(
    request: Request[Any, Any, Any],
    db: DB,
    device_id: DeviceIdPath,
    data: JSONBody[CommandIn],
    key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            required=True,
            description=IDEMPOTENCY_KEY_DOC,
            schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
        ),
    ] = None,
) -> Response[Dispatch]:
    require_admin(request, db)
    request_id = idempotency_key(key)
    created, dispatch = dispatches.create_command(
        db,
        request.app.state.settings,
        request_id=request_id,
        device_id=validation.device_id(device_id),
        action=data.action,
        payload=data.payload,
    )
    count_command("created" if created else "replayed")
    if created:
        return Response(convert(dispatch, Dispatch), status_code=202)
    return Response(convert(dispatch, Dispatch), status_code=200, headers={"Idempotent-Replayed": "true"})


@get(
    "/v1/commands/{request_id:str}",
    tags=["admin"],
    summary="One dispatch with its status history",
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "readonly": True},
    responses=problems(400, 401, 404, 429),
)
def get_command(request: Request[Any, Any, Any], db: DB, request_id: RequestIdPath) -> DispatchWithHistory:
    require_admin(request, db)
    return convert(dispatches.get_dispatch(db, request_id_from_path(request_id)), DispatchWithHistory)


@get(
    "/v1/commands/pending",
    tags=["device"],
    summary="The calling device's pending commands",
    description="Commands neither acknowledged nor expired, oldest first: the fallback when a push was lost.",
    security=DEVICE_SECURITY,
    sync_to_thread=True,
    opt={"auth": "device", "readonly": True},
    responses=problems(400, 401, 422, 429),
)
def pending_commands(
    request: Request[Any, Any, Any],
    db: DB,
    limit: Annotated[int, Parameter(ge=1, le=500, description="at most this many")] = 100,
) -> PendingCommandsOut:
    device = require_device(request, db)
    rows = dispatches.pending_commands(db, device.id, limit=limit)
    return PendingCommandsOut(items=[convert(row, PendingCommand) for row in rows])


@post(
    "/v1/commands/{request_id:str}/ack",
    tags=["device"],
    summary="Acknowledge one of the calling device's commands",
    description=(
        "`completed` marks the command `acked`, `failed` marks it `failed`. The same acknowledgement again is "
        "200; a conflicting one is 409; another device's command is 404."
    ),
    status_code=200,
    security=DEVICE_SECURITY,
    sync_to_thread=True,
    opt={"auth": "device", "body": "json"},
    responses=problems(400, 401, 404, 409, 413, 415, 422, 429),
)
def ack_command(request: Request[Any, Any, Any], db: DB, request_id: RequestIdPath, data: JSONBody[AckIn]) -> Dispatch:
    device = require_device(request, db)
    _, dispatch = dispatches.ack_command(
        db, device_id=device.id, request_id=request_id_from_path(request_id), status=data.status, detail=data.detail
    )
    return convert(dispatch, Dispatch)
