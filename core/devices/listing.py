"""The fleet view: a device's state, its summary dict, the device listing and its labels.

Plain SQLAlchemy Core on ``core.storage.tables``: importing this module loads neither the ORM nor the other
models, so that ``nexmdm devices list`` starts fast (docs/performance.md, part 5). Every function takes an
ORM ``Session`` (the API) or a Core ``Connection`` (the CLI's listing) alike. ``core.devices.records``
re-exports ``device_dict``, ``device_state`` and ``list_devices``, and ``core.devices.labels`` re-exports
``attach_labels``; this module is their one definition.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from core.base.clock import utcnow
from core.base.settings import Settings
from core.storage.tables import device_labels, devices

if TYPE_CHECKING:
    from sqlalchemy import Connection, Row
    from sqlalchemy.orm import Session

    from core.models import Device


def device_state(last_seen_at: datetime | None, settings: Settings, now: datetime | None = None) -> str:
    """``online``, ``stale`` or ``offline`` from the last-seen time and the configured thresholds."""
    if last_seen_at is None:
        return "offline"
    age = ((now or utcnow()) - last_seen_at).total_seconds()
    if age <= settings.device_online_seconds:
        return "online"
    if age <= settings.device_offline_seconds:
        return "stale"
    return "offline"


def device_dict(device: Device | Row[Any], settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """The summary of a device (a ``Device`` or a row of ``core.storage.tables.devices``: the names are the same)."""
    return {
        "device_id": device.id,
        "state": "revoked" if device.revoked_at else device_state(device.last_seen_at, settings, now),
        "last_seen_at": device.last_seen_at,
        "status": device.last_status,
        "battery_pct": device.last_battery_pct,
        "plugged": device.last_plugged,
        "network_type": device.last_network_type,
        "agent_version": device.agent_version,
        "model": device.model,
        "os_version": device.os_version,
        "has_fcm_token": bool(device.fcm_token) and device.fcm_token_dead_at is None,
        "enrolled_at": device.enrolled_at,
        "revoked_at": device.revoked_at,
        "generation": device.generation,
    }


def list_devices(
    db: Session | Connection,
    settings: Settings,
    *,
    offline_only: bool = False,
    limit: int = 100,
    after: str | None = None,
    selector: str | None = None,
    scope: str | None = None,
) -> list[dict[str, Any]]:
    """Devices ordered by id (keyset: ``after`` is the last id of the previous page).

    ``selector`` (``core.devices.selectors``) is evaluated in SQL; it never matches revoked devices. Its
    statement runs under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` on PostgreSQL (``SelectorTooSlow``).
    ``scope`` (a principal's, ``core.devices.scopes``) is ANDed with it.
    """
    now = utcnow()
    query = select(devices).order_by(devices.c.id)
    limited: Any = nullcontext()
    if selector is not None:
        from core.devices import selectors  # the ORM models: only when a selector is given
        from core.storage.timeouts import selector_reads

        parsed = selectors.parse(selector)
        query = query.where(selectors.where_clause(parsed, settings, now))
        limited = selector_reads(db, settings, parsed.text)
    if scope is not None:
        from core.devices import scopes  # the ORM models: only for a scoped principal

        query = scopes.restrict(query, scope, settings, now)
    if after is not None:
        query = query.where(devices.c.id > after)
    if offline_only:
        horizon = now - timedelta(seconds=settings.device_offline_seconds)
        query = query.where(
            devices.c.revoked_at.is_(None), (devices.c.last_seen_at.is_(None)) | (devices.c.last_seen_at < horizon)
        )
    with limited:
        return [device_dict(row, settings, now) for row in db.execute(query.limit(limit))]


def attach_labels(db: Session | Connection, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``labels`` to device dicts, with one query for the whole page."""
    ids = [item["device_id"] for item in items]
    found: dict[str, dict[str, str]] = {i: {} for i in ids}
    if ids:
        rows = db.execute(
            select(device_labels.c.device_id, device_labels.c.key, device_labels.c.value)
            .where(device_labels.c.device_id.in_(ids))
            .order_by(device_labels.c.device_id, device_labels.c.key)
        )
        for device_id, key, value in rows:
            found[device_id][key] = value
    for item in items:
        item["labels"] = found[item["device_id"]]
    return items
