"""Device labels: set and remove them on one device or in bulk by selector, and count them.

Every route here is an admin route (``admin_route``: its least role, checked before the body is read).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request
from litestar.params import JSONBody

from core.devices import labels as labels_module
from core.devices import scopes, selectors
from nexmdm_api.auth import admin_actor, admin_route, scope_of
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import DeviceIdPath
from nexmdm_api.routes.base import get, patch, post
from nexmdm_api.schemas_fleet import (
    BulkLabelsIn,
    BulkLabelsOut,
    DeviceLabelsOut,
    LabelCount,
    LabelCountsOut,
    LabelsPatchIn,
)
from nexmdm_api.scoping import device_in_scope


class LabelController(Controller):
    """Labels on one device, in bulk, and their counts."""

    path = "/v1"
    tags = ["admin"]

    @patch(
        "/devices/{device_id:str}/labels",
        summary="Set and remove a device's labels",
        description=(
            '`{"set": {"store": "42"}, "remove": ["ring"]}`; returns the labels after the change. A scoped key '
            "reaches its scope's devices only and cannot change the labels its scope names (403 `out_of_scope`)."
        ),
        **admin_route("operator", scoped=True, body="json"),
        responses=problems(400, 401, 403, 404, 409, 413, 415, 422, 429),
    )
    def patch_labels(
        self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath, data: JSONBody[LabelsPatchIn]
    ) -> DeviceLabelsOut:
        device_id = device_in_scope(request, db, device_id)
        scopes.check_label_change(scope_of(request), [*data.set, *data.remove])
        labels = labels_module.label_device(
            db, device_id, dict(data.set), list(data.remove), actor=admin_actor(request)
        )
        return DeviceLabelsOut(device_id=device_id, labels=labels)

    @post(
        "/devices/labels",
        summary="Set and remove labels on every device a selector matches",
        description="A scoped key's changes reach the devices of its scope AND the selector only.",
        status_code=200,
        **admin_route("operator", scoped=True, body="json"),
        responses=problems(400, 401, 403, 413, 415, 422, 429),
    )
    def bulk_labels(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[BulkLabelsIn]) -> BulkLabelsOut:
        parsed = selectors.parse(data.selector)
        scope, settings = scope_of(request), request.app.state.settings
        scopes.check_label_change(scope, [*data.set, *data.remove])
        ids = scopes.restrict(selectors.matching_ids(parsed, settings), scope, settings)
        actor = admin_actor(request)
        matched = labels_module.label_selected(
            db, ids, dict(data.set), list(data.remove), selector=parsed.text, actor=actor
        )
        return BulkLabelsOut(selector=parsed.text, matched=matched)

    @get(
        "/labels",
        summary="Devices per label key and value",
        description="A scoped key counts its scope's devices only.",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def label_counts(self, request: Request[Any, Any, Any], db: DB) -> LabelCountsOut:
        rows = labels_module.label_counts(db, within=scopes.scope_clause(scope_of(request), request.app.state.settings))
        return LabelCountsOut(items=[LabelCount(**row) for row in rows])
