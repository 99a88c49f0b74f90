"""The fleet for admins: devices and a device's heartbeats, with keyset paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request
from litestar.params import Parameter

from core.base import validation
from core.devices import records as devices
from core.devices.labels import attach_labels
from core.enrollment import enroll as enrollment
from nexmdm_api.auth import admin_actor, admin_route, scope_of
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import DeviceIdPath
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import get, post
from nexmdm_api.schemas import (
    DEVICE_ID_PATTERN,
    DeviceOut,
    DevicePage,
    HeartbeatPage,
    HeartbeatRow,
    convert,
)
from nexmdm_api.schemas_fleet import SELECTOR_DOC, SELECTOR_FORMAT, SELECTOR_MAX_BYTES, SELECTOR_PATTERN
from nexmdm_api.scoping import device_in_scope

# Cursors are positions, not secrets: every value their pattern allows is a valid position (the document
# can say exactly what is accepted). A device page goes on after a device id; a heartbeat page before a
# bucket, given as microseconds since the Unix epoch.
DeviceCursor = Annotated[
    str | None,
    Parameter(description="`next_cursor` of the previous page (a device id)", pattern=DEVICE_ID_PATTERN),
]
HEARTBEAT_CURSOR_PATTERN = r"^[0-9]{1,17}$"
HeartbeatCursor = Annotated[
    str | None,
    Parameter(
        description="`next_cursor` of the previous page (microseconds since the Unix epoch)",
        pattern=HEARTBEAT_CURSOR_PATTERN,
    ),
]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_instant(value: datetime) -> str:
    return str((value - _EPOCH) // _MICROSECOND)


def decode_instant(cursor: str) -> datetime:
    return _EPOCH + int(cursor) * _MICROSECOND


class DeviceController(Controller):
    """The fleet: list, one device, its heartbeats, revoke."""

    path = "/v1/devices"
    tags = ["admin"]

    @get(
        "/",
        summary="List devices",
        description=(
            "Ordered by device id; `next_cursor` is null on the last page. A scoped key lists its scope's devices "
            "only (its scope AND `selector`, in SQL)."
        ),
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_devices(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        limit: Limit = 100,
        cursor: DeviceCursor = None,
        offline: Annotated[bool, Parameter(description="only devices not seen for the offline threshold")] = False,
        selector: Annotated[
            str | None,
            Parameter(
                description=(
                    "only devices matching this selector (`store=42,@state=offline`); on PostgreSQL its query is "
                    "cancelled past NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS (422 `selector_too_slow`). " + SELECTOR_DOC
                ),
                max_length=SELECTOR_MAX_BYTES,
                pattern=SELECTOR_PATTERN,
                schema_extra={"format": SELECTOR_FORMAT},
            ),
        ] = None,
    ) -> DevicePage:
        after = validation.device_id(cursor, field="cursor") if cursor else None
        settings = request.app.state.settings
        rows, next_cursor = keyset_page(
            lambda n: attach_labels(
                db,
                devices.list_devices(
                    db,
                    settings,
                    offline_only=offline,
                    limit=n,
                    after=after,
                    selector=selector,
                    scope=scope_of(request),
                ),
            ),
            limit,
            "device_id",
        )
        return DevicePage(items=[convert(r, DeviceOut) for r in rows], next_cursor=next_cursor)

    @get(
        "/{device_id:str}",
        summary="One device",
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def get_device(self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath) -> DeviceOut:
        device = devices.get_device(db, device_in_scope(request, db, device_id))
        return convert(attach_labels(db, [devices.device_dict(device, request.app.state.settings)])[0], DeviceOut)

    @get(
        "/{device_id:str}/heartbeats",
        summary="A device's heartbeats, newest first",
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def device_heartbeats(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        device_id: DeviceIdPath,
        limit: Limit = 50,
        cursor: HeartbeatCursor = None,
    ) -> HeartbeatPage:
        devices.get_device(db, device_in_scope(request, db, device_id))
        before = decode_instant(cursor) if cursor else None
        rows, next_cursor = keyset_page(
            lambda n: devices.recent_heartbeats(db, device_id, limit=n, before=before),
            limit,
            lambda row: encode_instant(row["bucket_start"]),
        )
        return HeartbeatPage(items=[convert(r, HeartbeatRow) for r in rows], next_cursor=next_cursor)

    @post(
        "/{device_id:str}/revoke",
        summary="Revoke a device",
        description=(
            "Its token stops working at once; it may enroll again with a new enrollment token. The same rules as "
            "`nexmdm devices revoke` (one core function). Repeating it is 200."
        ),
        status_code=200,
        **admin_route("operator", scoped=True, action="device.revoke"),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def revoke_device(self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath) -> DeviceOut:
        device = enrollment.revoke_device(db, device_in_scope(request, db, device_id), actor=admin_actor(request))
        return convert(devices.device_dict(device, request.app.state.settings), DeviceOut)
