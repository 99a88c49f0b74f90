"""Device locations: personal data, read by operators and admins (never viewers), every read audited; and
the periodic reports of a device in lost mode."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request
from litestar.params import JSONBody, Parameter

from core.devices import locations
from nexmdm_api.auth import DEVICE_SECURITY, admin_actor, admin_route, require_device
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import DeviceIdPath
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import get, post
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_actions import LastLocationOut, LocationIn, LocationOut, LocationPage, LocationRow
from nexmdm_api.scoping import device_in_scope

LocationCursor = Annotated[
    str | None, Parameter(description="`next_cursor` of the previous page (a location id)", pattern=r"^[0-9]{1,18}$")
]


class LocationController(Controller):
    """A device's last known location and its kept fixes (operator or admin; each read is audited)."""

    path = "/v1/devices/{device_id:str}"
    tags = ["admin"]

    @get(
        "/location",
        summary="A device's last known location and lost mode",
        description=(
            "Locations are personal data: operators and admins only, and every read leaves a `location.read` audit "
            "row. `location` is null when none is kept (they are kept `NEXMDM_LOCATION_RETENTION_DAYS`)."
        ),
        # not read-only: the read writes its audit row in the same transaction
        **admin_route("operator", scoped=True, action="location.read"),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def last_location(self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath) -> LastLocationOut:
        found = locations.last_location(db, device_in_scope(request, db, device_id), actor=admin_actor(request))
        return convert(found, LastLocationOut)

    @get(
        "/locations",
        summary="A device's kept locations, newest first",
        description="Operators and admins only; the read is audited (`location.read`).",
        **admin_route("operator", scoped=True, action="location.read"),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def list_locations(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        device_id: DeviceIdPath,
        limit: Limit = 100,
        cursor: LocationCursor = None,
    ) -> LocationPage:
        device = device_in_scope(request, db, device_id)
        actor = admin_actor(request)
        rows, next_cursor = keyset_page(
            lambda n: locations.list_locations(
                db, device, actor=actor, limit=n, before_id=int(cursor) if cursor else None
            ),
            limit,
            "id",
        )
        return LocationPage(items=[convert(r, LocationRow) for r in rows], next_cursor=next_cursor)


class DeviceLocationController(Controller):
    """The calling device's periodic location, while it is in lost mode."""

    path = "/v1/location"
    tags = ["device"]

    @post(
        "/",
        summary="Report the calling device's location (lost mode only)",
        description=(
            "A device in lost mode reports a fix periodically; outside lost mode this is 409 `not_in_lost_mode` "
            "(a location is then sent only as the result of a `locate` command)."
        ),
        status_code=201,
        security=DEVICE_SECURITY,
        opt={"auth": "device", "body": "json"},
        responses=problems(400, 401, 409, 413, 415, 422, 429),
    )
    def report_location(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[LocationIn]) -> LocationOut:
        device = require_device(request, db)
        fix = {"lat": data.lat, "lon": data.lon, "accuracy_m": data.accuracy_m, "fixed_at": data.fixed_at}
        return convert(locations.report_location(db, device_id=device.id, fix=fix), LocationOut)
