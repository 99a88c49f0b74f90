"""Device labels: set and remove them on one device or in bulk by selector, and count them.

Every route here is an admin route (``admin_route``: its least role, checked before the body is read).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request
from litestar.params import JSONBody

from core.base import validation
from core.devices import labels as labels_module
from core.devices import selectors
from nexmdm_api.auth import admin_actor, admin_route
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


class LabelController(Controller):
    """Labels on one device, in bulk, and their counts."""

    path = "/v1"
    tags = ["admin"]

    @patch(
        "/devices/{device_id:str}/labels",
        summary="Set and remove a device's labels",
        description='`{"set": {"store": "42"}, "remove": ["ring"]}`; returns the labels after the change.',
        **admin_route("operator", body="json"),
        responses=problems(400, 401, 403, 404, 409, 413, 415, 422, 429),
    )
    def patch_labels(
        self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath, data: JSONBody[LabelsPatchIn]
    ) -> DeviceLabelsOut:
        device_id = validation.device_id(device_id)
        labels = labels_module.label_device(
            db, device_id, dict(data.set), list(data.remove), actor=admin_actor(request)
        )
        return DeviceLabelsOut(device_id=device_id, labels=labels)

    @post(
        "/devices/labels",
        summary="Set and remove labels on every device a selector matches",
        status_code=200,
        **admin_route("operator", body="json"),
        responses=problems(400, 401, 403, 413, 415, 422, 429),
    )
    def bulk_labels(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[BulkLabelsIn]) -> BulkLabelsOut:
        parsed = selectors.parse(data.selector)
        ids = selectors.matching_ids(parsed, request.app.state.settings)
        actor = admin_actor(request)
        matched = labels_module.label_selected(
            db, ids, dict(data.set), list(data.remove), selector=parsed.text, actor=actor
        )
        return BulkLabelsOut(selector=parsed.text, matched=matched)

    @get(
        "/labels",
        summary="Devices per label key and value",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def label_counts(self, request: Request[Any, Any, Any], db: DB) -> LabelCountsOut:
        return LabelCountsOut(items=[LabelCount(**row) for row in labels_module.label_counts(db)])
