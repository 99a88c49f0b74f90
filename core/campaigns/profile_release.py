"""A profile rollout's progress (a campaign of kind ``profile``, ``core.campaigns.profile_rollouts``).

A wave's release sends no command: its targets' holds are released (``core.profiles.holds.release``) and
their effective hashes move, set-based, in the same transaction as the campaign's release position, so a
release repeated or interrupted never moves a device twice (a released hold is gone: releasing it again
deletes and moves nothing). A released target whose campaign position says so and whose state is still
``queued`` is *pending*: it waits for its device to report compliant with its new effective hash
(``succeeded``) until the grace (the campaign's ``outcome_timeout_seconds``) after its hash moved; then it
``failed`` — ``noncompliant`` when it reported that hash as such, ``grace_expired`` when it never did.
Decided by :func:`sweep` (the maintenance loop, set-based) and for one device by :func:`check_device` (its
status report). A device left without any profile has nothing to comply with: it succeeds at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, or_, select, update
from sqlalchemy.orm import Session

from core.base.settings import Settings
from core.campaigns.batches import next_batch
from core.campaigns.counts import unreleased
from core.models import Campaign, CampaignTarget, Device, DeviceCompliance, Profile
from core.profiles import effective, holds
from core.storage.dialect import xact_lock
from core.storage.operations import rowcount
from core.storage.types import utcnow

NONCOMPLIANT = "noncompliant"
GRACE_EXPIRED = "grace_expired"
SUPERSEDED = "superseded"
_ACTIVE = ("running", "paused", "halted")


def profile_of(row: Campaign) -> dict[str, Any] | None:
    """What a campaign's answer says of its profile rollout (None for a campaign of commands)."""
    if row.kind != "profile":
        return None
    return {
        "name": row.profile_name,
        "from_version": row.from_version,
        "to_version": row.to_version,
        "grace_seconds": row.outcome_timeout_seconds,
    }


def lock(db: Session) -> None:
    """The profiles lock (``core.profiles.effective.LOCK``): held by every change of memberships and hashes."""
    xact_lock(db, effective.LOCK)


def release_batch(db: Session, campaign: Campaign, wave: int, batch: int, settings: Settings) -> int:
    """Release the next ``batch`` targets of ``wave``: their holds go and their hashes move; moves the
    campaign's cursor. Returns the devices moved."""
    cond, boundary = next_batch(db, campaign, wave, batch)
    moving = select(CampaignTarget.device_id).where(cond)
    moved = holds.release(db, settings, str(campaign.profile_name), moving)
    campaign.release_cursor = boundary
    return moved


def superseded(db: Session, campaign: Campaign) -> bool:
    """The profile moved on since the rollout began: applied again, rolled back or deleted."""
    profile = db.get(Profile, campaign.profile_name)
    return profile is None or profile.deleted_at is not None or profile.current_version != campaign.to_version


def _compliant() -> ColumnElement[bool]:
    """The target's device has nothing to comply with, or reported compliant with its effective hash."""
    reported = select(DeviceCompliance.device_id).where(
        DeviceCompliance.device_id == Device.id,
        DeviceCompliance.reported_hash == Device.effective_hash,
        DeviceCompliance.state == "compliant",
    )
    return exists(
        select(Device.id).where(
            Device.id == CampaignTarget.device_id, or_(Device.effective_hash.is_(None), exists(reported))
        )
    )


def sweep(db: Session, campaign: Campaign, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Decide every released target of one rollout that can be decided now: three set-based UPDATEs."""
    now = now or utcnow()
    campaign.outcome_swept_at = now
    t = CampaignTarget
    waiting = and_(t.campaign_id == campaign.id, t.state == "queued", not_(unreleased(campaign)))
    # revoked (or enrolled again: another generation) after its wave moved it: no outcome to judge, as a
    # command campaign's target whose device went is cancelled, not failed
    gone = select(Device.id).where(
        Device.id == t.device_id, or_(Device.revoked_at.is_not(None), Device.generation != t.generation)
    )
    cancelled = db.execute(
        update(t)
        .where(waiting, exists(gone))
        .values(state="cancelled", outcome_at=now)
        .execution_options(synchronize_session=False)
    )
    succeeded = db.execute(
        update(t)
        .where(waiting, _compliant())
        .values(state="succeeded", outcome_at=now)
        .execution_options(synchronize_session=False)
    )
    grace = now - timedelta(seconds=campaign.outcome_timeout_seconds or settings.profile_grace_seconds)
    expired = exists(select(Device.id).where(Device.id == t.device_id, Device.effective_since < grace))
    said = (  # it reported its current hash (not compliant, or it would have succeeded above)
        select(Device.id)
        .join(DeviceCompliance, DeviceCompliance.device_id == Device.id)
        .where(Device.id == t.device_id, DeviceCompliance.reported_hash == Device.effective_hash)
    )
    failed = 0
    for reason, condition in ((NONCOMPLIANT, exists(said)), (GRACE_EXPIRED, None)):
        where = [waiting, expired] + ([condition] if condition is not None else [])
        failed += rowcount(
            db.execute(
                update(t)
                .where(*where)
                .values(state="failed", reason=reason, outcome_at=now)
                .execution_options(synchronize_session=False)
            )
        )
    return {"succeeded": rowcount(succeeded), "failed": failed, "cancelled": rowcount(cancelled)}


def check_device(db: Session, device_id: str, now: datetime | None = None) -> int:
    """The device's released targets in running rollouts succeed if it is compliant now (its status report
    calls this): one UPDATE through the ``(device_id, state)`` index; returns the targets decided."""
    t, c = CampaignTarget, Campaign
    released = or_(
        t.wave < c.waves_released,
        and_(t.wave == c.waves_released, or_(c.release_cursor.is_(None), t.device_id <= c.release_cursor)),
    )
    rollout = select(c.id).where(c.id == t.campaign_id, c.kind == "profile", c.status.in_(_ACTIVE), released)
    result = db.execute(
        update(t)
        .where(t.device_id == device_id, t.state == "queued", exists(rollout), _compliant())
        .values(state="succeeded", outcome_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)
