"""Profile rollouts: a profile's new version moved to the fleet wave by wave, gated on compliance.

:func:`apply` is how the CLI and the API apply a profile. Without ``rollout`` it is
``core.profiles.store.apply`` (every device moves at once). With one, the new version is stored and every
device whose effective profile it changes is held where it is (``core.profiles.holds``); a campaign of kind
``profile`` is created whose targets are exactly those devices, in waves cut as a campaign's are (a hash of
campaign and device). The maintenance loop releases the waves (``core.campaigns.release``,
``core.campaigns.profile_release``): same row lock, same release position, same pause, resume, cancel and
halt as a campaign of commands; ``max_noncompliant_pct`` is its failure gate.

Either way, a new version of the profile ends its earlier rollout (``cancelled``, reason ``superseded``):
with waves the new rollout takes its held devices over (they keep what they have until their wave), without
waves every hold ends and every device follows the new version at once. A rollback or a delete through
``core.profiles.store`` directly is seen by the rollout's next step, which ends it the same way
(:func:`rollback` and :func:`delete` here end it at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument
from core.base.ids import new_campaign_id
from core.base.settings import Settings
from core.base.validation import payload_hash
from core.campaigns import snapshot
from core.campaigns.records import campaign_dict, load
from core.campaigns.release import ACTIVE, end_if_superseded
from core.campaigns.waves import MAX_EXPIRES_SECONDS, percentage
from core.events.audit import Actor, record
from core.models import Campaign, Device, Profile
from core.profiles import effective, holds, store
from core.profiles.document import check
from core.storage.dialect import xact_lock
from core.storage.types import utcnow

FIELDS = ("wave_percent", "wave_size", "wave_interval_seconds", "max_noncompliant_pct", "grace_seconds")
#: a simulated fleet (``nexmdm demo``) reports within a second or two; a real one wants minutes
MIN_GRACE_SECONDS = 1


@dataclass(frozen=True)
class Rollout:
    """A profile rollout as asked (``rollout`` in ``POST /v1/profiles``)."""

    size: int | None
    percent: float | None
    interval_seconds: int
    max_noncompliant_pct: float | None
    grace_seconds: int | None


def _seconds(value: Any, field: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (low <= value <= MAX_EXPIRES_SECONDS):
        raise InvalidArgument(f"{field} must be {low} s to 30 days, in seconds", field=field)
    return value


def validate_rollout(body: Any) -> Rollout | None:
    """``{wave_percent | wave_size, wave_interval_seconds?, max_noncompliant_pct?, grace_seconds?}`` or None."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise InvalidArgument("rollout must be an object", field="rollout")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown rollout option {unknown[0]!r}", field=f"rollout.{unknown[0]}")
    size, share = body.get("wave_size"), body.get("wave_percent")
    if (size is None) == (share is None):
        raise InvalidArgument("a rollout needs exactly one of wave_percent or wave_size", field="rollout")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InvalidArgument(
            "rollout.wave_size must be a whole number of devices, at least 1", field="rollout.wave_size"
        )
    grace = body.get("grace_seconds")
    return Rollout(
        size=size,
        percent=percentage(share, "rollout.wave_percent", allow_zero=False),
        interval_seconds=_seconds(body.get("wave_interval_seconds", 0), "rollout.wave_interval_seconds", 0),
        max_noncompliant_pct=percentage(body.get("max_noncompliant_pct"), "rollout.max_noncompliant_pct"),
        grace_seconds=None if grace is None else _seconds(grace, "rollout.grace_seconds", MIN_GRACE_SECONDS),
    )


def apply(
    db: Session,
    settings: Settings,
    raw: Any,
    actor: Actor,
    rollout: dict[str, Any] | None = None,
    *,
    action: str = "profile.apply",
) -> dict[str, Any]:
    """Apply a profile document, at once or (``rollout``) in waves; the answer is the apply's with
    ``rollout``: the profile rollout's campaign, or None (no waves, nothing changed, or no device moves)."""
    plan = validate_rollout(rollout)
    document = check(raw)  # (the store checks it again: a bad document is refused before any write)
    name = document["name"]
    # the version this apply moves from, read under the profiles lock the store's apply takes (it is re-entrant
    # within a transaction): read before it, a concurrent apply of the same profile could commit in between
    xact_lock(db, effective.LOCK)
    before = db.execute(
        select(Profile).where(Profile.name == name).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    from_version = before.current_version if before is not None and before.deleted_at is None else None
    applied = store.apply(db, settings, raw, actor, action=action, hold=plan is not None)
    if not applied["changed"]:
        return {**applied, "rollout": None}
    supersede(db, name)
    created = None
    if plan is not None:
        created = _create(db, settings, applied, document["selector"], from_version, plan, actor)
    return {**applied, "rollout": created}


def rollback(db: Session, settings: Settings, name: str, to_version: int, actor: Actor) -> dict[str, Any]:
    """``core.profiles.store.rollback`` (every device at once), ending the profile's rollout."""
    result = store.rollback(db, settings, name, to_version, actor)
    supersede(db, name)
    return result


def delete(db: Session, settings: Settings, name: str, actor: Actor) -> dict[str, Any]:
    """``core.profiles.store.delete``, ending the profile's rollout."""
    result = store.delete(db, settings, name, actor)
    supersede(db, name)
    return result


def supersede(db: Session, name: str) -> list[str]:
    """End the active rollouts of ``name`` whose version is no longer the profile's (a few rows at most)."""
    ids = db.execute(
        select(Campaign.id).where(
            Campaign.kind == "profile", Campaign.profile_name == name, Campaign.status.in_(ACTIVE)
        )
    ).scalars()
    now = utcnow()
    return [campaign_id for campaign_id in list(ids) if end_if_superseded(db, load(db, campaign_id, lock=True), now)]


def _create(
    db: Session,
    settings: Settings,
    applied: dict[str, Any],
    selector: str,
    from_version: int | None,
    plan: Rollout,
    actor: Actor,
) -> dict[str, Any] | None:
    """The rollout's campaign and its targets (the held devices, one ``INSERT ... SELECT``), waves cut by
    a hash of (campaign, device); None when no device's effective profile changes."""
    name, version = applied["name"], applied["version"]
    held = select(Device.id, Device.generation).where(Device.id.in_(holds.held_devices(name)))
    total = int(db.execute(select(func.count()).select_from(held.subquery())).scalar_one())
    if total == 0:
        return None
    size = plan.size if plan.percent is None else max(1, math.ceil(total * plan.percent / 100))
    size = min(size or total, total)
    grace = plan.grace_seconds or settings.profile_grace_seconds
    payload = {"profile": name, "version": version}
    now = utcnow()
    campaign = Campaign(
        id=new_campaign_id(),
        idempotency_key=f"profile:{name}:{version}",  # one rollout per version: versions are never reused
        request_hash=payload_hash({**payload, "rollout": plan.__dict__}),
        action="profile",
        payload=payload,
        payload_hash=payload_hash(payload),
        selector=selector,
        status="running",
        targeted=total,
        wave_size=size,
        wave_count=math.ceil(total / size),
        waves_released=0,
        wave_percent=plan.percent,
        interval_seconds=plan.interval_seconds,
        max_failure_pct=plan.max_noncompliant_pct,
        expires_in_seconds=grace,
        outcome_timeout_seconds=grace,
        kind="profile",
        profile_name=name,
        from_version=from_version,
        to_version=version,
        created_at=now,
        updated_at=now,
    )
    db.add(campaign)
    db.flush()
    snapshot.insert_targets(db, campaign.id, snapshot.judged(held, None), size)
    record(db, actor, "campaign.create", campaign.id, kind="profile", profile=name, version=version, targeted=total)
    return campaign_dict(db, campaign)
