"""Deciding on an approval, and what the maintenance loop does with it: expire, release.

Every transition is one conditional UPDATE (``... WHERE state = <from>``) in the caller's transaction:
of two racing decisions (an approval and a cancel, two approvals, an approval and the expiry) exactly one
changes the row, the others find it changed and are refused. A refusal is audited (``denied``, one row,
with the reason) before it is raised: the caller commits that row although nothing else changed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.approvals.requests import approval_dict, event_data, load
from core.base.errors import Conflict, Forbidden, NexMDMError, NotFound
from core.base.settings import Settings
from core.campaigns import cancel as cancel_campaign
from core.commands.dispatches import create_command
from core.devices.scopes import require_device_in_scope
from core.events.audit import SYSTEM, Actor, record, record_refusal
from core.events.webhooks import emit
from core.models import Approval, Campaign, Device
from core.storage.operations import rowcount
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.approvals")

#: states from which a cancel is possible: before the decision, and during the cooling-off delay
CANCELLABLE = ("awaiting_approval", "approved")


class ApprovalClosed(Conflict):
    """The approval is no longer in a state that allows this (decided, cancelled, expired, released)."""

    code = "approval_closed"


class SelfApprovalRefused(Forbidden):
    """The admin who asked may not approve (unless ``NEXMDM_ALLOW_SELF_APPROVAL``)."""

    code = "self_approval_refused"


#: the refusals that were audited: their caller commits the audit row, then reports the error
REFUSALS = (ApprovalClosed, SelfApprovalRefused)


def _transition(db: Session, approval_id: str, states: tuple[str, ...], now: datetime, **values: Any) -> bool:
    """Move the approval out of ``states``; True when this call won (an awaited one must not be past expiry)."""
    conditions = [Approval.id == approval_id, Approval.state.in_(states)]
    if values.get("state") in ("approved", "denied"):
        conditions.append(Approval.expires_at > now)
    result = db.execute(
        update(Approval).where(*conditions).values(**values).execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def _refuse(db: Session, actor: Actor, verb: str, approval_id: str, now: datetime) -> ApprovalClosed:
    """Audit a refused decision on a closed approval; returns the error to raise."""
    row = load(db, approval_id)
    db.refresh(row)
    state = "expired" if row.state == "awaiting_approval" and row.expires_at <= now else row.state
    record_refusal(db, actor, f"approval.{verb}", approval_id, reason=state, requested_by=row.requested_by)
    done = {"approve": "approved", "deny": "denied", "cancel": "cancelled"}[verb]
    return ApprovalClosed(f"approval {approval_id} is {state.replace('_', ' ')}; it can no longer be {done}")


def _settled(db: Session, approval_id: str) -> Approval:
    row = load(db, approval_id)
    db.refresh(row)
    return row


def _move(
    db: Session,
    approval_id: str,
    verb: str,
    states: tuple[str, ...],
    actor: Actor,
    now: datetime,
    values: dict[str, Any],
) -> Approval:
    """The transition, or its audited refusal (raised); returns the row as it now is."""
    load(db, approval_id)  # an unknown id is NotFound, not a refusal
    if not _transition(db, approval_id, states, now, **values):
        raise _refuse(db, actor, verb, approval_id, now)
    return _settled(db, approval_id)


def approve(
    db: Session, settings: Settings, approval_id: str, *, actor: Actor, now: datetime | None = None
) -> dict[str, Any]:
    """A second admin's approval: released after ``NEXMDM_DESTRUCTIVE_DELAY_SECONDS`` unless cancelled."""
    now = now or utcnow()
    row = load(db, approval_id)
    if row.requested_by == actor.name and not settings.allow_self_approval:
        record_refusal(db, actor, "approval.approve", approval_id, reason="self_approval")
        raise SelfApprovalRefused(
            f"{actor.name} asked for approval {approval_id}; another admin must approve it "
            "(NEXMDM_ALLOW_SELF_APPROVAL=true allows it in a lab with one admin)"
        )
    release_at = now + timedelta(seconds=settings.destructive_delay_seconds)
    values = {"state": "approved", "decided_by": actor.name[:200], "decided_at": now, "release_at": release_at}
    row = _move(db, approval_id, "approve", ("awaiting_approval",), actor, now, values)
    record(db, actor, "approval.approve", approval_id, requested_by=row.requested_by, release_at=release_at.isoformat())
    emit(db, "approval.approved", event_data(row), device_id=row.device_id)
    return approval_dict(row)


def deny(db: Session, approval_id: str, *, actor: Actor, now: datetime | None = None) -> dict[str, Any]:
    """An admin's refusal: the request ends (a campaign waiting for it is cancelled)."""
    now = now or utcnow()
    values = {"state": "denied", "decided_by": actor.name[:200], "decided_at": now}
    row = _move(db, approval_id, "deny", ("awaiting_approval",), actor, now, values)
    record(db, actor, "approval.deny", approval_id, requested_by=row.requested_by)
    _end_campaign(db, row, actor, "approval_denied")
    emit(db, "approval.denied", event_data(row), device_id=row.device_id)
    return approval_dict(row)


def cancel(db: Session, approval_id: str, *, actor: Actor, now: datetime | None = None) -> dict[str, Any]:
    """Anyone from operator up stops a request, before its decision or during the cooling-off delay."""
    now = now or utcnow()
    values = {"state": "cancelled", "ended_by": actor.name[:200], "ended_at": now}
    row = _move(db, approval_id, "cancel", CANCELLABLE, actor, now, values)
    record(db, actor, "approval.cancel", approval_id, requested_by=row.requested_by, decided_by=row.decided_by)
    _end_campaign(db, row, actor, "approval_cancelled")
    return approval_dict(row)


def _end_campaign(db: Session, row: Approval, actor: Actor, reason: str) -> None:
    """A campaign whose approval ended without a release is cancelled, with the reason."""
    if row.kind != "campaign":
        return
    campaign = db.get(Campaign, row.target_id)
    if campaign is None or campaign.status != "awaiting_approval":
        return
    cancel_campaign(db, row.target_id, actor=actor)
    db.execute(update(Campaign).where(Campaign.id == row.target_id).values(reason=reason))


def expire_due(session_factory: sessionmaker[Session], now: datetime | None = None) -> int:
    """Expire every request not decided within 24 h (the maintenance leader's sweep); returns how many."""
    now = now or utcnow()
    with session_factory.begin() as db:
        rows = (
            db.execute(
                update(Approval)
                .where(Approval.state == "awaiting_approval", Approval.expires_at <= now)
                .values(state="expired", ended_by=SYSTEM.name, ended_at=now)
                .returning(Approval.id)
                .execution_options(synchronize_session=False)
            )
            .scalars()
            .all()
        )
        for approval_id in rows:
            row = _settled(db, approval_id)
            record(db, SYSTEM, "approval.expire", approval_id, requested_by=row.requested_by)
            _end_campaign(db, row, SYSTEM, "approval_expired")
    if rows:
        logger.info("expired %d approvals nobody decided on", len(rows))
    return len(rows)


def release_due(session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> int:
    """Release every approved request whose delay is over, each in its own transaction; returns how many.

    Every process's maintenance loop calls it: the conditional UPDATE lets one process release each.
    """
    now = now or utcnow()
    with session_factory() as db:
        # a read: on SQLite a deferred transaction, so the idle check every second takes no write lock
        db.connection(execution_options={"sqlite_begin": "DEFERRED"})
        ids = (
            db.execute(
                select(Approval.id)
                .where(Approval.state == "approved", Approval.release_at <= now)
                .order_by(Approval.release_at)
            )
            .scalars()
            .all()
        )
    released = 0
    for approval_id in ids:
        with session_factory.begin() as db:
            released += release(db, settings, approval_id, now)
    return released


def release(db: Session, settings: Settings, approval_id: str, now: datetime) -> bool:
    """Release one approval whose delay is over: its command is created, or its campaign starts running."""
    values = {"state": "released", "ended_by": SYSTEM.name, "ended_at": now}
    won = rowcount(
        db.execute(
            update(Approval)
            .where(Approval.id == approval_id, Approval.state == "approved", Approval.release_at <= now)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    )
    if not won:
        return False
    row = _settled(db, approval_id)
    problem = _start(db, settings, row, now)
    if problem is not None:  # the device was revoked, the action unconfigured, the campaign cancelled meanwhile
        db.execute(update(Approval).where(Approval.id == approval_id).values(state="cancelled"))
        record(db, SYSTEM, "approval.cancel", approval_id, reason=problem, requested_by=row.requested_by)
        logger.warning("approval %s not released: %s", approval_id, problem)
        return False
    record(db, SYSTEM, "approval.release", approval_id, requested_by=row.requested_by, decided_by=row.decided_by)
    return True


def _start(db: Session, settings: Settings, row: Approval, now: datetime) -> str | None:
    """What the release does; a reason when it cannot (nothing was written then)."""
    if row.kind == "campaign":
        started = db.execute(
            update(Campaign)
            .where(Campaign.id == row.target_id, Campaign.status == "awaiting_approval")
            .values(status="running", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return None if rowcount(started) == 1 else "campaign no longer awaiting approval"
    device = db.get(Device, row.device_id or "")
    if device is not None and device.generation != row.device_generation:
        return f"device {row.device_id} was enrolled again since the request"
    if device is not None and row.requested_scope is not None:
        try:  # a scoped requester could not have asked for it now (an unscoped admin moved the device)
            require_device_in_scope(db, device.id, row.requested_scope, settings)
        except NotFound:
            return f"device {row.device_id} has left the requester's scope ({row.requested_scope}) since the request"
    requester = Actor(row.requested_by, None, {"approved_by": row.decided_by, "approval_id": row.id})
    try:
        with db.begin_nested():
            create_command(
                db,
                settings,
                request_id=row.target_id,
                device_id=row.device_id or "",
                action=row.action,
                payload=row.payload,
                actor=requester,
                approved=True,
            )
    except NexMDMError as exc:
        return exc.message[:200]
    return None
