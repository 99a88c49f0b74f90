"""Campaign progress: wave releases, halting, completion, and the operator's pause/resume/cancel.

Every step locks the campaign row first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` serializes writers), so two workers never release one wave twice, and a release
commits only while the campaign is ``running`` and its wave is the current or the next one. A wave is
released in transactions of at most ``RELEASE_BATCH`` commands, each one set-based
(``INSERT ... SELECT ... ON CONFLICT (request_id) DO NOTHING``) that leaves the targets untouched: the
campaign row's release position (``waves_released``, ``release_cursor``) commits with each batch, so a
crash between batches leaves the rest queued and the next round goes on where it stopped.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, literal, null, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import Conflict, InvalidArgument
from core.base.settings import Settings, get_settings
from core.campaigns import outcomes, profile_release
from core.campaigns.batches import next_batch
from core.campaigns.counts import OUTCOME_COUNTS, gate_figures, live_counts, unreleased
from core.campaigns.records import campaign_dict, load, percentage
from core.commands.lifecycle import finish_pending
from core.events.audit import SYSTEM, Actor, record
from core.events.webhooks import emit
from core.models import CAMPAIGN_FINAL, Campaign, CampaignTarget, Device, FcmDispatch
from core.models.base import JSONType
from core.storage.dialect import insert_for
from core.storage.operations import rowcount
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.campaigns")

#: at most this many commands are inserted per transaction
RELEASE_BATCH = 10_000
#: statuses in which a campaign may still change on its own (release, halt, complete)
ACTIVE = ("running", "paused", "halted")


def _event(campaign: Campaign, counts: dict[str, Any]) -> dict[str, Any]:
    """A campaign event's data: what it sent and how it went (never the payload)."""
    return {
        "campaign_id": campaign.id,
        "action": campaign.action,
        "status": campaign.status,
        "reason": campaign.reason,
        "counts": {"targeted": campaign.targeted} | {k: counts.get(k, 0) for k in OUTCOME_COUNTS},
    }


def _halted(db: Session, campaign: Campaign, counts: dict[str, Any]) -> None:
    """An automatic halt: audited as ``system:worker`` and announced (``campaign.halted``)."""
    record(db, SYSTEM, "campaign.halt", campaign.id, reason=campaign.reason)
    emit(db, "campaign.halted", _event(campaign, counts))


def _finish(db: Session, campaign: Campaign, status: str, now: datetime, reason: str | None = None) -> None:
    counts = live_counts(db, campaign)
    counts["targeted"] = campaign.targeted
    campaign.status = status
    campaign.reason = reason
    campaign.finished_at = now
    campaign.updated_at = now
    campaign.final_counts = counts


def release_batch(
    db: Session,
    campaign: Campaign,
    wave: int,
    now: datetime,
    batch: int | None = None,
    settings: Settings | None = None,
) -> int:
    """Release the next ``batch`` (``RELEASE_BATCH``) targets of ``wave`` after the campaign's release
    cursor, set-based; moves the cursor (NULL once the wave is done). Returns the commands inserted (for a
    profile rollout: the devices moved, ``core.campaigns.profile_release``)."""
    batch = batch or RELEASE_BATCH
    t = CampaignTarget
    if campaign.kind == "profile":
        return profile_release.release_batch(db, campaign, wave, batch, settings or get_settings())
    cond, boundary = next_batch(db, campaign, wave, batch)
    payload = null() if campaign.payload is None else literal(campaign.payload, JSONType)
    source = (
        select(
            literal(campaign.id + ":") + t.device_id,
            t.device_id,
            literal(campaign.action),
            payload,
            literal(campaign.payload_hash),
            literal("pending"),
            literal("pending"),
            literal(0),
            literal(0),
            literal(now, FcmDispatch.created_at.type),
            literal(campaign.id),
            literal(now + timedelta(seconds=campaign.expires_in_seconds), FcmDispatch.expires_at.type),
            t.generation,
        )
        .join(Device, and_(Device.id == t.device_id, Device.generation == t.generation, Device.revoked_at.is_(None)))
        .where(cond)
        .order_by(t.device_id)
    )
    columns = [
        "request_id",
        "device_id",
        "action",
        "payload",
        "payload_hash",
        "status",
        "fcm_status",
        "replay_count",
        "attempts",
        "created_at",
        "campaign_id",
        "expires_at",
        "generation",
    ]
    inserted = rowcount(
        db.execute(
            insert_for(db, FcmDispatch)
            .from_select(columns, source)
            .on_conflict_do_nothing(index_elements=["request_id"])
        )
    )
    campaign.release_cursor = boundary
    return inserted or 0


def _decide(db: Session, campaign: Campaign, settings: Settings | None, now: datetime) -> None:
    sweep = profile_release.sweep if campaign.kind == "profile" else outcomes.sweep
    decided = sweep(db, campaign, settings or get_settings(), now)
    if any(decided.values()):
        logger.info(
            "campaign %s outcomes: %s", campaign.id, ", ".join(f"{n} {state}" for state, n in decided.items() if n)
        )


def _locked(db: Session, campaign_id: str) -> Campaign:
    """The campaign row, locked. A profile rollout's step takes the profiles lock first: a profile's apply
    holds that lock when it ends the profile's rollout, so both take them in the same order (no deadlock)."""
    if db.execute(select(Campaign.kind).where(Campaign.id == campaign_id)).scalar() == "profile":
        profile_release.lock(db)
    return load(db, campaign_id, lock=True)


def end_if_superseded(db: Session, campaign: Campaign, now: datetime) -> bool:
    """A profile rollout whose profile moved on (applied again, rolled back, deleted) ends: the new write
    decided for its devices."""
    if campaign.kind != "profile" or not profile_release.superseded(db, campaign):
        return False
    end_targets(db, campaign)
    _finish(db, campaign, "cancelled", now, reason=profile_release.SUPERSEDED)
    logger.info("profile rollout %s superseded", campaign.id)
    return True


def step(db: Session, campaign_id: str, now: datetime | None = None, settings: Settings | None = None) -> str:
    """One transaction's worth of progress; returns what it did (``released``, ``waiting``, ``completed``...)."""
    now = now or utcnow()
    campaign = _locked(db, campaign_id)
    if campaign.status not in ACTIVE or end_if_superseded(db, campaign, now):
        return "final"
    profile = campaign.kind == "profile"
    outcome = campaign.success_when is not None or profile  # a profile rollout's success is compliance
    if outcome and campaign.release_cursor is None and outcomes.sweep_due(campaign, now):
        # acked targets decided first: gates count outcomes
        _decide(db, campaign, settings, now)
    current = campaign.waves_released
    if campaign.status == "running" and campaign.release_cursor is not None:
        # a wave interrupted between batches (or still being released) goes on first: no gate applies
        campaign.updated_at = now
        inserted = release_batch(db, campaign, current, now, settings=settings)
        logger.info("campaign %s wave %d: released %d more commands", campaign.id, current, inserted)
        return "released"
    counts = live_counts(db, campaign)
    waiting = counts["pending"] + (counts["acked"] if outcome else 0)  # acked: waiting for the outcome
    if counts["queued"] == 0 and waiting == 0:
        _finish(db, campaign, "completed", now)
        emit(db, "campaign.completed", _event(campaign, counts))
        logger.info("campaign %s completed", campaign.id)
        return "completed"
    if campaign.status != "running":
        return "idle"
    gates = gate_figures(counts, outcome=outcome)
    if campaign.max_failure_pct is not None and gates["base"] > 0 and gates["failure_pct"] > campaign.max_failure_pct:
        campaign.status, campaign.reason, campaign.updated_at = "halted", "max_failure", now
        _halted(db, campaign, counts)
        logger.warning("campaign %s halted: %.1f %% failed", campaign.id, gates["failure_pct"])
        return "halted"
    if current >= campaign.wave_count:
        return "waiting"  # everything released; completion waits for the last commands
    if current >= 1:
        due = (campaign.last_wave_at or now) + timedelta(seconds=campaign.interval_seconds or 0)
        undecided = waiting if profile else 0  # a profile wave waits for every released device's outcome
        if now < due or undecided:
            return "waiting"
        if campaign.min_success_pct is not None and gates["success_pct"] < campaign.min_success_pct:
            if waiting == 0:
                campaign.status, campaign.reason, campaign.updated_at = "halted", "min_success_unmet", now
                _halted(db, campaign, counts)
                logger.warning("campaign %s halted: %.1f %% succeeded", campaign.id, gates["success_pct"])
                return "halted"
            return "waiting"
    wave = current + 1
    campaign.waves_released, campaign.release_cursor = wave, ""
    campaign.last_wave_at = campaign.updated_at = now
    inserted = release_batch(db, campaign, wave, now, settings=settings)
    logger.info("campaign %s wave %d: released %d commands", campaign.id, wave, inserted)
    return "released"


def advance(
    session_factory: sessionmaker[Session],
    campaign_id: str,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> list[str]:
    """Progress one campaign as far as it can go now, one short transaction per step."""
    steps = []
    while True:
        with session_factory.begin() as db:
            outcome = step(db, campaign_id, now, settings)
        steps.append(outcome)
        if outcome != "released" or len(steps) > 10_000:
            return steps


def run_due(session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> int:
    """Progress every unfinished campaign (the maintenance loop of ``serve`` and ``worker``); returns releases."""
    with session_factory() as db:
        ids = db.execute(select(Campaign.id).where(Campaign.status.in_(ACTIVE)).order_by(Campaign.id)).scalars().all()
    released = 0
    for campaign_id in ids:
        released += advance(session_factory, campaign_id, now, settings).count("released")
    return released


# ----------------------------------------------------------------------------- operator actions


def _refuse_awaiting(campaign: Campaign) -> None:
    """Only its approval starts a campaign that waits for one (``core.approvals``): no pause, no resume."""
    if campaign.status == "awaiting_approval":
        raise Conflict(f"campaign {campaign.id} is awaiting approval; approve, deny or cancel its approval")


def pause(db: Session, campaign_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
    campaign = load(db, campaign_id, lock=True)
    _refuse_awaiting(campaign)
    if campaign.status in CAMPAIGN_FINAL:
        raise Conflict(f"campaign {campaign_id} is {campaign.status}")
    if campaign.status != "paused":
        campaign.status, campaign.reason, campaign.updated_at = "paused", None, utcnow()
        record(db, actor, "campaign.pause", campaign_id)
    return campaign_dict(db, campaign)


def resume(
    db: Session,
    campaign_id: str,
    *,
    ignore_failures: bool = False,
    min_success_pct: float | None = None,
    max_failure_pct: float | None = None,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Resume a paused or halted campaign; a halted one needs new thresholds or ``ignore_failures``."""
    percentage(min_success_pct, "min_success_pct")
    percentage(max_failure_pct, "max_failure_pct")
    campaign = load(db, campaign_id, lock=True)
    _refuse_awaiting(campaign)
    if campaign.status in CAMPAIGN_FINAL:
        raise Conflict(f"campaign {campaign_id} is {campaign.status}; it cannot resume")
    changed = min_success_pct is not None or max_failure_pct is not None
    if campaign.status == "halted" and not (ignore_failures or changed):
        raise Conflict(
            f"campaign {campaign_id} halted ({campaign.reason}); resume with new thresholds or ignore_failures"
        )
    if ignore_failures:
        campaign.min_success_pct = campaign.max_failure_pct = None
    if min_success_pct is not None:
        campaign.min_success_pct = min_success_pct
    if max_failure_pct is not None:
        campaign.max_failure_pct = max_failure_pct
    if campaign.status != "running":
        campaign.status, campaign.reason, campaign.updated_at = "running", None, utcnow()
        record(db, actor, "campaign.resume", campaign_id, ignore_failures=ignore_failures)
    return campaign_dict(db, campaign)


def end_targets(db: Session, campaign: Campaign) -> None:
    """Cancel the targets that will get nothing now: the unreleased ones (and in a profile rollout those
    released but undecided too: nothing judges them any more; its held devices stay held)."""
    t = CampaignTarget
    which = unreleased(campaign)
    if campaign.kind == "profile":
        which = and_(t.campaign_id == campaign.id, t.state == "queued")
    db.execute(update(t).where(which).values(state="cancelled").execution_options(synchronize_session=False))


def cancel(db: Session, campaign_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
    """Cancel: queued targets and pending commands are cancelled at once (they leave pending lists)."""
    campaign = load(db, campaign_id, lock=True)
    if campaign.status == "completed":
        raise Conflict(f"campaign {campaign_id} is completed")
    if campaign.status == "cancelled":
        return campaign_dict(db, campaign)
    now = utcnow()
    end_targets(db, campaign)
    db.execute(finish_pending(FcmDispatch.campaign_id == campaign.id, status="cancelled", now=now))
    _finish(db, campaign, "cancelled", now)
    record(db, actor, "campaign.cancel", campaign_id)
    return campaign_dict(db, campaign)


def resume_values(body: dict[str, Any] | None) -> dict[str, Any]:
    """The optional body of a resume: ``ignore_failures``, ``min_success_pct``, ``max_failure_pct``."""
    body = body or {}
    unknown = set(body) - {"ignore_failures", "min_success_pct", "max_failure_pct"}
    if unknown:
        raise InvalidArgument(f"unknown field {sorted(unknown)[0]!r}", field="body")
    return body
