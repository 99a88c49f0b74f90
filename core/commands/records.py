"""The seed's ``record_fcm_dispatch``: one dispatch record per ``request_id``, replays counted in SQL."""

from __future__ import annotations

import functools
import time
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import InvalidArgument
from core.models import FCM_STATUSES, Device, FcmDispatch
from core.storage.dialect import bind_params, insert_for, name_of, refused
from core.storage.operations import log_operation
from core.storage.types import utcnow

_DISPATCHES: Table = FcmDispatch.__table__  # type: ignore[assignment]
_DEVICES: Table = Device.__table__  # core.storage.tables.devices (mapped there, so already a Table to mypy)
_COLUMNS = ("request_id", "device_id", "action", "payload", "payload_hash", "fcm_status", "created_at")


@functools.cache
def _statement(dialect: str) -> Any:
    """Built once per dialect with bind parameters (a reused statement also hits the compiled cache).

    A fresh row has replay_count 0; every conflict increments it, so 0 in RETURNING means "inserted".
    """
    return (
        insert_for(dialect, _DISPATCHES)
        .values(
            status="pending",
            replay_count=0,
            attempts=0,
            # stamped from the device: a command belongs to the enrollment generation it was made for
            generation=func.coalesce(
                select(_DEVICES.c.generation).where(_DEVICES.c.id == bindparam("device_id")).scalar_subquery(), 1
            ),
            **bind_params(_DISPATCHES, *_COLUMNS),
        )
        .on_conflict_do_update(
            index_elements=[_DISPATCHES.c.request_id],
            set_={
                "replay_count": _DISPATCHES.c.replay_count + 1,
                "last_replayed_at": bindparam("created_at", type_=_DISPATCHES.c.created_at.type),
            },
        )
        .returning(*_DISPATCHES.c)
    )


def record_fcm_dispatch(
    db: Session,
    *,
    request_id: str,
    device_id: str,
    action: str,
    payload_hash: str,
    fcm_status: str = "pending",
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a command dispatch once per ``request_id``.

    Returns ``{"created": bool, "dispatch": {...}}``. A duplicate returns the existing record unchanged
    (whatever its action or payload) and counts the replay durably in ``replay_count``.
    """
    started = time.perf_counter()
    validation.request_id(request_id)
    validation.device_id(device_id)
    validation.action(action)
    validation.payload_hash_value(payload_hash)
    validation.payload(payload)
    if fcm_status not in FCM_STATUSES:
        raise InvalidArgument(f"fcm_status must be one of {', '.join(FCM_STATUSES)}", field="fcm_status")

    params = {
        "request_id": request_id,
        "device_id": device_id,
        "action": action,
        "payload": payload,
        "payload_hash": payload_hash,
        "fcm_status": fcm_status,
        "created_at": utcnow(),
    }
    try:
        row = db.execute(_statement(name_of(db)), params).mappings().one()
    except IntegrityError as exc:
        raise refused(exc, f"device {device_id!r} does not exist") from None
    created = row["replay_count"] == 0
    log_operation("create" if created else "idempotency_hit", "fcm_dispatches", {"request_id": request_id}, started)
    return {"created": created, "dispatch": dict(row)}
