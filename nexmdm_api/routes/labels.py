"""Device labels: set and remove them on one device or in bulk by selector, and count them.

Every route here is an admin route (``require_admin``).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, patch, post
from litestar.params import JSONBody
from sqlalchemy import func, select

from core import fleet, validation
from core.fleet import selectors
from nexmdm_api.auth import ADMIN_SECURITY, require_admin
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import DeviceIdPath
from nexmdm_api.schemas import (
    BulkLabelsIn,
    BulkLabelsOut,
    DeviceLabelsOut,
    LabelCount,
    LabelCountsOut,
    LabelsPatchIn,
)


@patch(
    "/v1/devices/{device_id:str}/labels",
    tags=["admin"],
    summary="Set and remove a device's labels",
    description='`{"set": {"store": "42"}, "remove": ["ring"]}`; returns the labels after the change.',
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "body": "json"},
    responses=problems(400, 401, 404, 409, 413, 415, 422, 429),
)
def patch_labels(
    request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath, data: JSONBody[LabelsPatchIn]
) -> DeviceLabelsOut:
    require_admin(request, db)
    device_id = validation.device_id(device_id)
    labels = fleet.label_device(db, device_id, dict(data.set), list(data.remove))
    return DeviceLabelsOut(device_id=device_id, labels=labels)


@post(
    "/v1/devices/labels",
    tags=["admin"],
    summary="Set and remove labels on every device a selector matches",
    status_code=200,
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "body": "json"},
    responses=problems(400, 401, 413, 415, 422, 429),
)
def bulk_labels(request: Request[Any, Any, Any], db: DB, data: JSONBody[BulkLabelsIn]) -> BulkLabelsOut:
    require_admin(request, db)
    parsed = selectors.parse(data.selector)
    ids = selectors.matching_ids(parsed, request.app.state.settings)
    matched = db.execute(select(func.count()).select_from(ids.subquery())).scalar_one()
    fleet.apply_labels(db, ids, dict(data.set), list(data.remove))
    return BulkLabelsOut(selector=parsed.text, matched=matched)


@get(
    "/v1/labels",
    tags=["admin"],
    summary="Devices per label key and value",
    security=ADMIN_SECURITY,
    sync_to_thread=True,
    opt={"auth": "admin", "readonly": True},
    responses=problems(400, 401, 422, 429),
)
def label_counts(request: Request[Any, Any, Any], db: DB) -> LabelCountsOut:
    require_admin(request, db)
    return LabelCountsOut(items=[LabelCount(**row) for row in fleet.label_counts(db)])
