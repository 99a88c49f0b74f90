"""The fleet for admins: devices and a device's heartbeats, with keyset paging."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import FromPath, Parameter

from core import devices, validation
from core.errors import InvalidArgument
from nexmdm_api.auth import ADMIN_SECURITY, require_admin
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.schemas import DeviceOut, DevicePage, HeartbeatPage, HeartbeatRow, convert

Limit = Annotated[int, Parameter(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Parameter(description="`next_cursor` of the previous page", max_length=512)]


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("cursor is not one this API returned", field="cursor") from None


@get(
    "/v1/devices",
    tags=["admin"],
    summary="List devices",
    description="Ordered by device id; `next_cursor` is null on the last page.",
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "readonly": True},
    responses=problems(400, 401, 422, 429),
)
def list_devices(
    request: Request[Any, Any, Any],
    db: DB,
    limit: Limit = 100,
    cursor: Cursor = None,
    offline: Annotated[bool, Parameter(description="only devices not seen for the offline threshold")] = False,
) -> DevicePage:
    require_admin(request, db)
    after = validation.device_id(decode_cursor(cursor), field="cursor") if cursor else None
    rows = devices.list_devices(db, request.app.state.settings, offline_only=offline, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    return DevicePage(
        items=[convert(r, DeviceOut) for r in rows],
        next_cursor=encode_cursor(rows[-1]["device_id"]) if more else None,
    )


@get(
    "/v1/devices/{device_id:str}",
    tags=["admin"],
    summary="One device",
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "readonly": True},
    responses=problems(400, 401, 404, 422, 429),
)
def get_device(request: Request[Any, Any, Any], db: DB, device_id: FromPath[str]) -> DeviceOut:
    require_admin(request, db)
    device = devices.get_device(db, validation.device_id(device_id))
    return convert(devices.device_dict(device, request.app.state.settings), DeviceOut)


@get(
    "/v1/devices/{device_id:str}/heartbeats",
    tags=["admin"],
    summary="A device's heartbeats, newest first",
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "readonly": True},
    responses=problems(400, 401, 404, 422, 429),
)
def device_heartbeats(
    request: Request[Any, Any, Any], db: DB, device_id: FromPath[str], limit: Limit = 50, cursor: Cursor = None
) -> HeartbeatPage:
    require_admin(request, db)
    devices.get_device(db, validation.device_id(device_id))
    before = None
    if cursor:
        try:
            before = datetime.fromisoformat(decode_cursor(cursor))
        except ValueError:
            raise InvalidArgument("cursor is not one this API returned", field="cursor") from None
        if before.tzinfo is None:
            raise InvalidArgument("cursor is not one this API returned", field="cursor")
        try:
            before = before.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 with an offset: the database layer would fail (503)
            raise InvalidArgument("cursor is not one this API returned", field="cursor") from None
    rows = devices.recent_heartbeats(db, device_id, limit=limit + 1, before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    return HeartbeatPage(
        items=[convert(r, HeartbeatRow) for r in rows],
        next_cursor=encode_cursor(rows[-1]["bucket_start"].isoformat()) if more else None,
    )
