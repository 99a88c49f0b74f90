"""Commands: accept (idempotently), list pending, acknowledge, inspect and summarize."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, null, select
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import Conflict, InvalidArgument, NotFound
from core.base.settings import Settings
from core.commands.catalogue import catalogue_for
from core.commands.destructive import refuse_unapproved
from core.commands.lifecycle import finish_pending
from core.commands.records import record_fcm_dispatch
from core.commands.results import apply_answer, check_answer
from core.devices.records import get_device
from core.events.audit import Actor, record
from core.events.webhooks import emit
from core.models import Device, FcmDispatch
from core.storage.types import utcnow

ACK_STATUSES = {"completed": "acked", "failed": "failed"}
#: ids that would collide with fixed paths under /v1/commands/
RESERVED_REQUEST_IDS = frozenset({"pending"})


class IdempotencyMismatch(InvalidArgument):
    """The Idempotency-Key was already used for a different device, action or payload."""

    code = "idempotency_key_reused"


def public_dispatch(row: Any) -> dict[str, Any]:
    """The dispatch as clients see it (``row`` is a mapping or a model)."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    return {
        "request_id": get("request_id"),
        "device_id": get("device_id"),
        "action": get("action"),
        "payload": get("payload"),
        "status": get("status"),
        "fcm_status": get("fcm_status"),
        "created_at": get("created_at"),
        "sent_at": get("sent_at"),
        "acked_at": get("acked_at"),
        "finished_at": get("finished_at"),
        "attempts": get("attempts"),
        "last_error": get("last_error"),
        "fcm_message_id": get("fcm_message_id"),
        "next_attempt_at": get("next_attempt_at"),
        "replay_count": get("replay_count"),
        "ack_detail": get("ack_detail"),
        "result": get("result"),
        "error_code": get("error_code"),
    }


def history(dispatch: dict[str, Any]) -> list[dict[str, Any]]:
    """The status history, from the timestamps each step leaves."""
    steps = [{"status": "pending", "at": dispatch["created_at"]}]
    if dispatch["sent_at"]:
        steps.append({"status": "sent", "at": dispatch["sent_at"]})
    if dispatch["status"] != "pending" and dispatch["finished_at"]:
        steps.append({"status": dispatch["status"], "at": dispatch["finished_at"]})
    return sorted(steps, key=lambda s: s["at"])


def check_command(
    db: Session, settings: Settings, *, request_id: str, device_id: str, action: str, payload: dict[str, Any] | None
) -> None:
    """What a new command must be: a usable key, a known action, a payload, an unrevoked device."""
    validation.request_id(request_id)
    if request_id in RESERVED_REQUEST_IDS:
        raise InvalidArgument(
            f"{request_id!r} is reserved (GET /v1/commands/{request_id} is another endpoint); choose another key",
            field="Idempotency-Key",
        )
    if request_id.startswith("cmp_"):
        raise InvalidArgument(
            "Idempotency-Key may not start with 'cmp_' (campaign commands are named {campaign_id}:{device_id})",
            field="Idempotency-Key",
        )
    if request_id.startswith("remediate:"):
        raise InvalidArgument(
            "Idempotency-Key may not start with 'remediate:' (a profile's own installs are named "
            "remediate:{device_id}:{build_id}:{day})",
            field="Idempotency-Key",
        )
    validation.device_id(device_id)
    catalogue_for(settings).check_command(action, payload)
    device = get_device(db, device_id)
    if device.revoked_at is not None:
        raise Conflict(f"device {device_id!r} is revoked")


def create_command(
    db: Session,
    settings: Settings,
    *,
    request_id: str,
    device_id: str,
    action: str,
    payload: dict[str, Any] | None = None,
    actor: Actor | None = None,
    approved: bool = False,
) -> tuple[bool, dict[str, Any]]:
    """Accept a command once per ``request_id``; returns ``(created, dispatch)``.

    A repeat with the same device, action and payload returns the original (counted as a replay);
    the same key with anything different raises :class:`IdempotencyMismatch`. A destructive action is
    refused unless ``approved`` (only the release of its approval, ``core.approvals``, passes it).
    """
    check_command(db, settings, request_id=request_id, device_id=device_id, action=action, payload=payload)
    if not approved:
        refuse_unapproved(action, settings)
    digest = validation.payload_hash(payload)
    result = record_fcm_dispatch(
        db, request_id=request_id, device_id=device_id, action=action, payload_hash=digest, payload=payload
    )
    dispatch = result["dispatch"]
    if not result["created"] and (
        dispatch["device_id"],
        dispatch["action"],
        dispatch["payload_hash"],
    ) != (device_id, action, digest):
        raise IdempotencyMismatch(
            f"Idempotency-Key {request_id!r} was already used for a different device, action or payload",
            field="Idempotency-Key",
        )
    if result["created"]:  # a replay changes nothing: no audit row
        record(db, actor, "command.create", request_id, device_id=device_id, action=action, payload_hash=digest)
    return result["created"], public_dispatch(dispatch)


def _failure(row: Any) -> dict[str, Any]:
    """``command.failed`` data: never the payload nor the device's free-text detail (it may hold anything)."""
    return {
        "request_id": row["request_id"],
        "device_id": row["device_id"],
        "action": row["action"],
        "payload_hash": row["payload_hash"],
        "failed_at": row["finished_at"].isoformat(),
        "error_code": row["error_code"],
    }


def cancel_command(db: Session, request_id: str, *, actor: Actor | None = None) -> tuple[bool, dict[str, Any]]:
    """Cancel a pending command; returns ``(changed, dispatch)``.

    It leaves the device's pending list at once and a late ack is 409. Cancelling a cancelled command
    again changes nothing; cancelling one that already finished otherwise is a ``Conflict``.
    """
    now = utcnow()
    row = (
        db.execute(
            finish_pending(FcmDispatch.request_id == request_id, status="cancelled", now=now).returning(
                FcmDispatch.__table__
            )
        )
        .mappings()
        .first()
    )
    if row is not None:
        record(db, actor, "command.cancel", request_id, device_id=row["device_id"], action=row["action"])
        return True, public_dispatch(dict(row))
    current = get_dispatch(db, request_id)
    if current["status"] == "cancelled":
        return False, current
    raise Conflict(f"command {request_id!r} is already {current['status']}")


def require_within(db: Session, request_id: str, within: Select[Any] | None) -> str:
    """``NotFound`` for a command whose device is not among ``within`` (a SELECT of device ids: a scope's)."""
    if within is not None:
        query = select(FcmDispatch.id).where(FcmDispatch.request_id == request_id, FcmDispatch.device_id.in_(within))
        if db.execute(query).first() is None:
            raise NotFound(f"no command {request_id!r}")
    return request_id


def get_dispatch(db: Session, request_id: str) -> dict[str, Any]:
    row = db.execute(select(FcmDispatch).where(FcmDispatch.request_id == request_id)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no command {request_id!r}")
    dispatch = public_dispatch(row)
    return dispatch | {"history": history(dispatch)}


def _current_generation(device_id: str) -> Any:
    """The device's current enrollment generation, as a scalar subquery (a re-enrolled id sees only its own)."""
    return select(Device.generation).where(Device.id == device_id).scalar_subquery()


def pending_commands(db: Session, device_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
    rows = db.execute(
        select(FcmDispatch)
        .where(
            FcmDispatch.device_id == device_id,
            FcmDispatch.status == "pending",
            FcmDispatch.generation == _current_generation(device_id),
        )
        .order_by(FcmDispatch.id)
        .limit(limit)
    ).scalars()
    return [public_dispatch(r) for r in rows]


def _own_command(db: Session, device_id: str, request_id: str) -> dict[str, Any] | None:
    row = (
        db.execute(
            select(FcmDispatch.__table__).where(
                FcmDispatch.request_id == request_id,
                FcmDispatch.device_id == device_id,
                FcmDispatch.generation == _current_generation(device_id),
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def ack_command(
    db: Session,
    *,
    device_id: str,
    request_id: str,
    status: str,
    detail: str | None = None,
    result: dict[str, Any] | None = None,
    error_code: str | None = None,
    settings: Settings | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Record a device's acknowledgement; returns ``(changed, dispatch)``.

    A completed ack may carry a ``result`` (checked against the action's result schema), a failed one an
    ``error_code`` (``core.commands.catalogue.ERROR_CODES``); either refused leaves the command pending.
    The same ack again changes nothing; a conflicting one (or one for an expired or cancelled command) is
    a ``Conflict``; another device's command, or one of an earlier enrollment generation of this device id,
    is ``NotFound``, exactly like a command that does not exist.
    """
    if status not in ACK_STATUSES:
        raise InvalidArgument("status must be 'completed' or 'failed'", field="status")
    validation.text(detail, "detail", max_length=1000)
    new_status = ACK_STATUSES[status]
    current = _own_command(db, device_id, request_id)
    if current is None:
        raise NotFound(f"no command {request_id!r} for this device")
    answer = check_answer(settings, current["action"], new_status, result, error_code)
    now = utcnow()
    row = (
        db.execute(
            finish_pending(
                FcmDispatch.request_id == request_id,
                FcmDispatch.device_id == device_id,
                FcmDispatch.generation == _current_generation(device_id),
                status=new_status,
                now=now,
                keep_lease=True,
                acked_at=now,
                ack_detail=detail,
                result=answer.result if answer.result is not None else null(),
                error_code=answer.error_code,
            ).returning(FcmDispatch.__table__)
        )
        .mappings()
        .first()
    )
    if row is not None:
        apply_answer(db, row, answer)
        if new_status == "failed" and row["campaign_id"] is None:
            # device-reported failures only; commands of a campaign report through campaign.* instead
            emit(db, "command.failed", _failure(row), device_id=device_id)
        return True, public_dispatch(dict(row))
    current = _own_command(db, device_id, request_id) or current
    if current["status"] == new_status and current["acked_at"] is not None:
        return False, public_dispatch(current)
    raise Conflict(f"command {request_id!r} is already {current['status']}")


def list_dispatches(
    db: Session,
    *,
    device_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    before_id: int | None = None,
    campaign_id: str | None = None,
    within: Select[Any] | None = None,
) -> list[dict[str, Any]]:
    """Newest first; keyset: ``before_id`` is the ``id`` of the last dispatch of the previous page.

    ``within``: only the commands of these devices (a SELECT of device ids: a scope's)."""
    query = select(FcmDispatch).order_by(FcmDispatch.id.desc()).limit(limit)
    if within is not None:
        query = query.where(FcmDispatch.device_id.in_(within))
    if before_id is not None:
        query = query.where(FcmDispatch.id < before_id)
    if device_id is not None:
        query = query.where(FcmDispatch.device_id == device_id)
    if status is not None:
        query = query.where(FcmDispatch.status == status)
    if campaign_id is not None:
        query = query.where(FcmDispatch.campaign_id == campaign_id)
    if since is not None:
        query = query.where(FcmDispatch.created_at >= since)
    return [public_dispatch(r) | {"id": r.id} for r in db.execute(query).scalars()]


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    index = math.ceil(pct / 100 * len(sorted_values)) - 1  # nearest rank
    return sorted_values[max(0, min(len(sorted_values) - 1, index))]


def dispatch_stats(db: Session, *, since: datetime | None = None) -> dict[str, Any]:
    """Totals by status and action, the idempotency hit rate, push and ack latency percentiles."""
    where = [FcmDispatch.created_at >= since] if since is not None else []

    def counts(column: Any) -> dict[str, int]:
        return dict(db.execute(select(column, func.count()).where(*where).group_by(column)).all())

    def latency(begin: Any, end: Any) -> dict[str, Any]:
        pairs = db.execute(select(begin, end).where(*where, begin.is_not(None), end.is_not(None))).all()
        values = sorted((b - a).total_seconds() * 1000 for a, b in pairs)
        return {"p50": _percentile(values, 50), "p95": _percentile(values, 95), "count": len(values)}

    by_status = counts(FcmDispatch.status)
    total = sum(by_status.values())
    replays = int(db.execute(select(func.coalesce(func.sum(FcmDispatch.replay_count), 0)).where(*where)).scalar_one())
    requests = total + replays
    return {
        "since": since,
        "total": total,
        "by_status": by_status,
        "by_fcm_status": counts(FcmDispatch.fcm_status),
        "by_action": counts(FcmDispatch.action),
        "replays": replays,
        "requests": requests,
        "idempotency_hit_rate": replays / requests if requests else 0.0,
        "push_latency_ms": latency(FcmDispatch.created_at, FcmDispatch.sent_at),
        # from creation, whether or not a push was sent (polling devices ack unpushed commands too)
        "ack_latency_ms": latency(FcmDispatch.created_at, FcmDispatch.acked_at),
    }
