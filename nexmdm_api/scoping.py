"""Where the API applies the scope of an admin request (``operator@store=42``): one helper per shape.

A route opens to scoped principals with ``admin_route(role, scoped=True)`` and then passes the scope to
the core, through these helpers or :func:`nexmdm_api.auth.scope_of`; the core ANDs it into its SQL with
``core.devices.scopes.restrict``. A device outside the scope is 404, as an unknown one.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from sqlalchemy import Select
from sqlalchemy.orm import Session

from core.base import validation
from core.devices import scopes
from nexmdm_api.auth import scope_of


def device_in_scope(request: Request[Any, Any, Any], db: Session, device_id: str) -> str:
    """The path's device id, validated; 404 when the device is outside the request's scope."""
    device_id = validation.device_id(device_id)
    scopes.require_device_in_scope(db, device_id, scope_of(request), request.app.state.settings)
    return device_id


def devices_in_scope(request: Request[Any, Any, Any]) -> Select[Any] | None:
    """``SELECT devices.id`` of the scope's devices, or ``None`` for an unscoped request (no filter)."""
    scope = scope_of(request)
    return None if scope is None else scopes.scoped_ids(scope, request.app.state.settings)
