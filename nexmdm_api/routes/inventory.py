"""Inventory: a device reports its own (``PUT``/``PATCH /v1/inventory``); admins read a device's
inventory, apps and app changes, and the fleet's apps by selector (``/v1/apps``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request
from litestar.params import JSONBody, Parameter

from core.base.errors import InvalidArgument
from core.campaigns import check_device
from core.inventory import reads
from core.inventory.document import MAX_BODY_BYTES, check_delta, check_package, check_report
from core.inventory.store import patch_inventory, put_inventory
from nexmdm_api.auth import DEVICE_SECURITY, admin_route, require_device, scope_of
from nexmdm_api.db import DB
from nexmdm_api.errors import ApiError, problems
from nexmdm_api.openapi import DeviceIdPath, allow
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import get, patch, put
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_fleet import SELECTOR_DOC, SELECTOR_FORMAT, SELECTOR_MAX_BYTES, SELECTOR_PATTERN
from nexmdm_api.schemas_inventory import (
    PACKAGE_PATTERN,
    AppChangePage,
    AppChangeRow,
    DeviceAppPage,
    DeviceAppRow,
    DeviceInventoryOut,
    FleetAppPage,
    FleetAppRow,
    InventoryDeltaIn,
    InventoryIn,
    InventoryStored,
    PackageOut,
)
from nexmdm_api.scoping import device_in_scope

_DEVICE_ROUTE: dict[str, Any] = {
    "status_code": 200,
    "security": DEVICE_SECURITY,
    "opt": {"auth": "device", "body": "json"},
    "request_max_body_size": MAX_BODY_BYTES,
    "responses": problems(400, 401, 409, 413, 415, 422, 429),
}
PackageCursor = Annotated[
    str | None, Parameter(description="`next_cursor` of the previous page (a package)", pattern=PACKAGE_PATTERN)
]
ChangeCursor = Annotated[
    str | None, Parameter(description="`next_cursor` of the previous page (an id)", pattern=r"^[0-9]{1,18}$")
]
Selector = Annotated[
    str | None,
    Parameter(
        description="only devices matching this selector. " + SELECTOR_DOC,
        max_length=SELECTOR_MAX_BYTES,
        pattern=SELECTOR_PATTERN,
        schema_extra={"format": SELECTOR_FORMAT},
    ),
]


class InventoryController(Controller):
    """The calling device's inventory report: a full replace, or a delta on the inventory the server holds."""

    path = "/v1/inventory"
    tags = ["device"]
    allowed = allow(path)

    @put(
        "/",
        summary="Report the device's whole inventory",
        description=(
            "A full replace (docs/device-protocol.md). `hash` must be the SHA-256 of the canonical document "
            "(422 `inventory_hash_mismatch`); the same hash again is 200 with `changed: false` and writes nothing."
        ),
        **_DEVICE_ROUTE,
    )
    def put_inventory(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[InventoryIn]) -> InventoryStored:
        device = require_device(request, db)
        settings = request.app.state.settings
        stored = put_inventory(db, device.id, check_report(msgspec.to_builtins(data)), settings)
        if stored.changed:  # an outcome-gated campaign's target may have succeeded with this report
            check_device(db, device.id, settings)
        return convert(stored.as_dict(), InventoryStored)

    @patch(
        "/",
        summary="Report a change of the device's inventory",
        description=(
            "A delta on `base_hash`: 409 `inventory_base_mismatch` when the server holds another inventory (then "
            "send it whole with PUT); `hash` is the inventory's hash after the delta."
        ),
        **_DEVICE_ROUTE,
    )
    def patch_inventory(
        self, request: Request[Any, Any, Any], db: DB, data: JSONBody[InventoryDeltaIn]
    ) -> InventoryStored:
        device = require_device(request, db)
        settings = request.app.state.settings
        stored = patch_inventory(db, device.id, check_delta(msgspec.to_builtins(data)), settings)
        if stored.changed:
            check_device(db, device.id, settings)
        return convert(stored.as_dict(), InventoryStored)


class DeviceInventoryController(Controller):
    """A device's inventory, apps and app changes, for admins."""

    path = "/v1/devices/{device_id:str}"
    tags = ["admin"]

    @get(
        "/inventory",
        summary="A device's inventory",
        description="The device fields and app count it last reported; 404 when it never reported one.",
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def device_inventory(self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath) -> DeviceInventoryOut:
        return convert(reads.device_inventory(db, device_in_scope(request, db, device_id)), DeviceInventoryOut)

    @get(
        "/apps",
        summary="A device's installed apps, by package",
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def device_apps(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        device_id: DeviceIdPath,
        limit: Limit = 500,
        cursor: PackageCursor = None,
    ) -> DeviceAppPage:
        device = device_in_scope(request, db, device_id)
        rows, next_cursor = keyset_page(
            lambda n: reads.device_apps(db, device, limit=n, after=cursor), limit, "package"
        )
        return DeviceAppPage(items=[convert(r, DeviceAppRow) for r in rows], next_cursor=next_cursor)

    @get(
        "/app-changes",
        summary="A device's app changes, newest first",
        description="`installed`, `updated`, `downgraded` or `removed`, kept NEXMDM_APP_CHANGE_RETENTION_DAYS.",
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def app_changes(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        device_id: DeviceIdPath,
        limit: Limit = 50,
        cursor: ChangeCursor = None,
    ) -> AppChangePage:
        device = device_in_scope(request, db, device_id)
        before = int(cursor) if cursor else None
        rows, next_cursor = keyset_page(lambda n: reads.app_changes(db, device, limit=n, before=before), limit, "id")
        return AppChangePage(items=[convert(r, AppChangeRow) for r in rows], next_cursor=next_cursor)


class AppController(Controller):
    """The fleet's apps: every package with its spread of versions, and one package's version histogram."""

    path = "/v1/apps"
    tags = ["admin"]

    @get(
        "/",
        summary="The apps on the selected devices",
        description=(
            "By package: devices, distinct versions, the most common version and its share. On PostgreSQL the "
            "query is cancelled past NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS (422 `selector_too_slow`)."
        ),
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_apps(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        limit: Limit = 100,
        cursor: PackageCursor = None,
        selector: Selector = None,
    ) -> FleetAppPage:
        settings = request.app.state.settings
        rows, next_cursor = keyset_page(
            lambda n: reads.fleet_apps(db, settings, selector=selector, scope=scope_of(request), limit=n, after=cursor),
            limit,
            "package",
        )
        return FleetAppPage(items=[convert(r, FleetAppRow) for r in rows], next_cursor=next_cursor)

    @get(
        "/{package:str}",
        summary="One app's versions on the selected devices",
        description="Devices per version code, newest first, with a version name; 404 when no device has it.",
        **admin_route("viewer", scoped=True, readonly=True, replica=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def get_app(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        package: Annotated[str, Parameter(description="the package name", schema_extra={"pattern": PACKAGE_PATTERN})],
        selector: Selector = None,
    ) -> PackageOut:
        try:
            name = check_package(package, "package")
        except InvalidArgument as exc:
            raise ApiError(400, exc.message, code="invalid_package") from None
        found = reads.package_versions(db, request.app.state.settings, name, selector=selector, scope=scope_of(request))
        return convert(found, PackageOut)
