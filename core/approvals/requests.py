"""Asking for an approval: a destructive command or campaign is written ``awaiting_approval``, and read back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import InvalidArgument, NotFound
from core.base.ids import new_approval_id
from core.base.settings import Settings
from core.campaigns import create_campaign
from core.commands.destructive import is_destructive
from core.commands.dispatches import IdempotencyMismatch, check_command
from core.events.audit import Actor, record
from core.events.webhooks import emit
from core.models import APPROVAL_STATES, Approval, Device, FcmDispatch
from core.storage.dialect import insert_for
from core.storage.types import utcnow

#: an approval not given within this time expires (the maintenance sweep marks it)
EXPIRY = timedelta(hours=24)


def approval_dict(row: Approval) -> dict[str, Any]:
    """The approval as admins see it (a command's payload included, as a command's own view shows it)."""
    return {
        "id": row.id,
        "kind": row.kind,
        "target_id": row.target_id,
        "device_id": row.device_id,
        "action": row.action,
        "payload": row.payload,
        "state": row.state,
        "requested_by": row.requested_by,
        "requested_at": row.requested_at,
        "expires_at": row.expires_at,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at,
        "release_at": row.release_at,
        "ended_by": row.ended_by,
        "ended_at": row.ended_at,
    }


def event_data(row: Approval) -> dict[str, Any]:
    """An ``approval.*`` webhook's data: who asked for what and who decided (never the payload)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "approval_id": row.id,
        "kind": row.kind,
        "target_id": row.target_id,
        "device_id": row.device_id,
        "action": row.action,
        "state": row.state,
        "requested_by": row.requested_by,
        "decided_by": row.decided_by,
        "expires_at": iso(row.expires_at),
        "release_at": iso(row.release_at),
    }


def load(db: Session, approval_id: str) -> Approval:
    row = db.execute(select(Approval).where(Approval.id == approval_id)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no approval {approval_id!r}")
    return row


def _by_target(db: Session, kind: str, target_id: str) -> Approval | None:
    return db.execute(
        select(Approval).where(Approval.kind == kind, Approval.target_id == target_id)
    ).scalar_one_or_none()


def _insert(
    db: Session,
    *,
    kind: str,
    target_id: str,
    action: str,
    actor: Actor,
    device_id: str | None = None,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Approval | None:
    """One new approval, or None when one for this target exists (a concurrent twin committed first)."""
    now = now or utcnow()
    values = {
        "id": new_approval_id(),
        "kind": kind,
        "target_id": target_id,
        "device_id": device_id,
        "device_generation": db.get_one(Device, device_id).generation if device_id is not None else None,
        "action": action,
        "payload": payload,
        "state": "awaiting_approval",
        "requested_by": actor.name[:200],
        "requested_scope": actor.details.get("scope") if kind == "command" else None,
        "requested_at": now,
        "expires_at": now + EXPIRY,
    }
    statement = insert_for(db, Approval).values(**values).on_conflict_do_nothing(index_elements=["kind", "target_id"])
    inserted = db.execute(statement.returning(Approval.id)).scalar_one_or_none()
    if inserted is None:
        return None
    row = load(db, inserted)
    record(
        db,
        actor,
        "approval.request",
        row.id,
        kind=kind,
        target_id=target_id,
        device_id=device_id,
        action=action,
        payload_hash=validation.payload_hash(payload) if kind == "command" else None,
    )
    emit(db, "approval.requested", event_data(row), device_id=device_id)
    return row


def _destructive(action: str) -> None:
    if not is_destructive(action):
        raise InvalidArgument(f"{action!r} is not destructive: send it without an approval", field="action")


def request_command(
    db: Session,
    settings: Settings,
    *,
    request_id: str,
    device_id: str,
    action: str,
    payload: dict[str, Any] | None = None,
    actor: Actor,
    now: datetime | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Ask for a destructive command; returns ``(created, approval)``. Nothing is dispatched before its release.

    Idempotent by ``request_id`` like any command: the same key, device, action and payload again returns
    the first approval; the same key with anything else is an ``IdempotencyMismatch``.
    """
    check_command(db, settings, request_id=request_id, device_id=device_id, action=action, payload=payload)
    _destructive(action)
    digest = validation.payload_hash(payload)

    def same(row: Approval) -> bool:
        return (row.device_id, row.action, validation.payload_hash(row.payload)) == (device_id, action, digest)

    mismatch = IdempotencyMismatch(
        f"Idempotency-Key {request_id!r} was already used for a different device, action or payload",
        field="Idempotency-Key",
    )
    if db.execute(select(FcmDispatch.id).where(FcmDispatch.request_id == request_id)).first() is not None:
        existing = _by_target(db, "command", request_id)
        if existing is None or not same(existing):
            raise mismatch
        return False, approval_dict(existing)
    row = _insert(
        db,
        kind="command",
        target_id=request_id,
        device_id=device_id,
        action=action,
        payload=payload,
        actor=actor,
        now=now,
    )
    if row is not None:
        return True, approval_dict(row)
    existing = _by_target(db, "command", request_id)
    if existing is None or not same(existing):
        raise mismatch
    return False, approval_dict(existing)


def request_campaign(
    db: Session, settings: Settings, *, action: str, actor: Actor, **campaign: Any
) -> tuple[bool, dict[str, Any]]:
    """Ask for a destructive campaign; returns ``(created, approval)``.

    The campaign (``core.campaigns.create_campaign``'s arguments in ``campaign``) is created with its
    snapshot at once, in the ``awaiting_approval`` status that no release touches.
    """
    _destructive(action)
    created, made = create_campaign(db, settings, action=action, actor=actor, awaiting_approval=True, **campaign)
    row = _insert(db, kind="campaign", target_id=made["id"], action=action, actor=actor) if created else None
    if row is None:
        row = _by_target(db, "campaign", made["id"])
        if row is None:  # a campaign replayed by its key that was never destructive
            raise IdempotencyMismatch("that Idempotency-Key was used for a campaign without approval")
        return False, approval_dict(row)
    return True, approval_dict(row)


def get_approval(db: Session, approval_id: str) -> dict[str, Any]:
    return approval_dict(load(db, approval_id))


def list_approvals(
    db: Session, *, state: str | None = None, limit: int = 50, before: str | None = None
) -> list[dict[str, Any]]:
    """Newest first (keyset: ``before`` is the last id of the previous page)."""
    if state is not None and state not in APPROVAL_STATES:
        raise InvalidArgument(f"state must be one of {', '.join(APPROVAL_STATES)}", field="state")
    query = select(Approval).order_by(Approval.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Approval.id < before)
    if state is not None:
        query = query.where(Approval.state == state)
    return [approval_dict(row) for row in db.execute(query).scalars()]
