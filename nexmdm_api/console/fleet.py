"""The console's fleet pages: overview (``nexmdm top``, live), devices (selector bar, keyset pages), a device.

Each page calls the core functions the admin API calls, with the API's least role (viewer to read,
operator to change labels; a lost device's location, personal data, for operators and admins only, each
read audited as ``location.read`` like ``GET /v1/devices/ID/location``). A scoped person sees the devices
of their scope only: the scope is a second selector ANDed in SQL
(``core.devices.listing.list_devices(scope=...)``), and a device outside it is 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import InvalidArgument, NotFound
from core.commands.dispatches import list_dispatches
from core.devices import labels as labels_module
from core.devices import locations, scopes, selectors
from core.devices import records as devices
from core.devices.labels import attach_labels
from core.events.audit import list_events
from core.inventory import reads as inventory
from core.models import Device
from core.ops import fleet_stats
from core.profiles import compliance
from nexmdm_api.console import session
from nexmdm_api.console.session import PREFIX
from nexmdm_api.db import DB
from nexmdm_api.routes.base import get, post

PAGE = 50
#: apps and app changes on a device's page (the full lists: ``nexmdm devices show ID --apps``, the API)
APPS_SHOWN = 20
CHANGES_SHOWN = 10
Query = FromQuery[str]
READ = {"readonly": True}
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


def in_scope(db: Session, request: Request[Any, Any, Any], device_id: str) -> Device:
    """The device, if the person's scope reaches it (else 404, as if it did not exist)."""
    who = session.person(request)
    device = devices.get_device(db, validation.device_id(device_id))
    if who.scope is not None:
        settings = request.app.state.settings
        clause = selectors.terms_clause(selectors.parse(who.scope), settings)
        if db.execute(select(Device.id).where(Device.id == device.id, clause)).first() is None:
            raise NotFound(f"no device {device_id!r}")
    return device


def overview_context(request: Request[Any, Any, Any], db: Session) -> dict[str, Any]:
    who = session.need(request, "viewer")
    scope = selectors.parse(who.scope) if who.scope else None
    return {"snap": fleet_stats.snapshot(db, request.app.state.settings, selector=scope), "scoped": scope is not None}


def inventory_context(db: Session, device_id: str) -> dict[str, Any]:
    """The device's reported inventory (None before its first report), its first apps and recent app changes."""
    try:
        held: dict[str, Any] | None = inventory.device_inventory(db, device_id)
    except NotFound:
        held = None
    return {
        "inventory": held,
        "apps": inventory.device_apps(db, device_id, limit=APPS_SHOWN) if held else [],
        "app_changes": inventory.app_changes(db, device_id, limit=CHANGES_SHOWN),
    }


def lost_device(request: Request[Any, Any, Any], db: Session, device_id: str) -> dict[str, Any] | None:
    """For an operator or admin, a device in lost mode: its lost mode and last known location (None otherwise).

    Viewers never see a location. The read is audited (``location.read``, actor ``user:EMAIL``) by
    ``last_location`` in a short write transaction of its own: the page itself reads in a read-only one.
    """
    if session.person(request).role not in ("operator", "admin") or locations.lost_mode_of(db, device_id) is None:
        return None
    with request.app.state.db.sessions.begin() as audited:
        return locations.last_location(audited, device_id, actor=session.actor(request))


class FleetPages(Controller):
    """Overview, devices, a device."""

    path = PREFIX
    include_in_schema = False

    @get("/", opt=READ)
    def overview(self, request: Request[Any, Any, Any], db: DB) -> Template:
        return Template("overview.html", context=overview_context(request, db))

    @get("/overview/live", opt=READ)
    def overview_live(self, request: Request[Any, Any, Any], db: DB) -> Template:
        """The overview's figures alone: htmx replaces them every few seconds."""
        return Template("_overview_live.html", context=overview_context(request, db))

    @get("/devices", opt=READ)
    def device_list(
        self, request: Request[Any, Any, Any], db: DB, selector: Query = "", cursor: Query = ""
    ) -> Template:
        who = session.need(request, "viewer")
        settings = request.app.state.settings
        error, rows, next_cursor = None, [], None
        try:
            after = validation.device_id(cursor, field="cursor") if cursor else None
            rows = devices.list_devices(
                db, settings, limit=PAGE + 1, after=after, selector=selector or None, scope=who.scope
            )
            if len(rows) > PAGE:
                rows, next_cursor = rows[:PAGE], rows[PAGE - 1]["device_id"]
            attach_labels(db, rows)
        except InvalidArgument as exc:
            error = {"message": exc.message, "position": getattr(exc, "position", None)}
        context = {"rows": rows, "selector": selector, "error": error, "next_cursor": next_cursor, "cursor": cursor}
        if request.headers.get("hx-request") and request.headers.get("hx-target") == "device-table":
            return Template("_device_table.html", context=context)
        return Template("devices.html", context=context)

    @get("/devices/{device_id:str}", opt=READ)
    def device(self, request: Request[Any, Any, Any], db: DB, device_id: FromPath[str]) -> Template:
        session.need(request, "viewer")
        device = in_scope(db, request, device_id)
        summary = attach_labels(db, [devices.device_dict(device, request.app.state.settings)])[0]
        return Template(
            "device.html",
            context={
                "device": summary,
                "heartbeats": devices.recent_heartbeats(db, device.id, limit=20),
                "commands": list_dispatches(db, device_id=device.id, limit=20),
                "audit": list_events(db, target=device.id, limit=20),
                "lost": lost_device(request, db, device.id),
                "compliance": compliance.device_compliance(db, request.app.state.settings, device.id),
                **inventory_context(db, device.id),
            },
        )

    @post("/devices/{device_id:str}/labels", opt={"body": "form", "action": "device.label"}, status_code=303)
    def set_label(self, request: Request[Any, Any, Any], db: DB, device_id: FromPath[str], data: Form) -> Response[Any]:
        who = session.need(request, "operator")
        device = in_scope(db, request, device_id)
        key, value, remove = data.get("key", "").strip(), data.get("value", "").strip(), data.get("remove", "").strip()
        to_set = {key: value} if key else {}
        # as PATCH /v1/devices/ID/labels: a label the person's scope is defined by stays (403 out_of_scope)
        scopes.check_label_change(who.scope, [*to_set, *([remove] if remove else [])])
        labels_module.label_device(db, device.id, to_set, [remove] if remove else [], actor=session.actor(request))
        return Redirect(f"{PREFIX}/devices/{device.id}", status_code=303)
