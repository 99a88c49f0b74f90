"""A campaign's counts, from one ``GROUP BY`` on the indexed ``campaign_id`` (frozen when it ends)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from core.models import Campaign, CampaignTarget, FcmDispatch

STATUS_COUNTS = ("queued", "pending", "acked", "failed", "expired", "cancelled")
#: what a campaign's counts hold beside the pushes: the commands' states and the outcomes
OUTCOME_COUNTS = ("skipped", *STATUS_COUNTS, "succeeded")


def unreleased(campaign: Campaign) -> ColumnElement[bool]:
    """The campaign's targets whose command is not released yet (and never cancelled).

    A release does not rewrite the targets it releases: the campaign row says how far it got — every
    wave up to ``waves_released``, except the device ids after ``release_cursor`` in that last wave.
    """
    t = CampaignTarget
    later = t.wave > campaign.waves_released
    if campaign.release_cursor is not None:
        later = or_(later, and_(t.wave == campaign.waves_released, t.device_id > campaign.release_cursor))
    return and_(t.campaign_id == campaign.id, t.state == "queued", later)


def unreleased_any() -> ColumnElement[bool]:
    """``unreleased`` for targets of any campaign (correlated with ``campaigns``): revocation uses it."""
    t, c = CampaignTarget, Campaign
    return and_(
        t.state == "queued",
        exists(
            select(c.id).where(
                c.id == t.campaign_id,
                or_(
                    t.wave > c.waves_released,
                    and_(t.wave == c.waves_released, c.release_cursor.is_not(None), t.device_id > c.release_cursor),
                ),
            )
        ),
    )


def skipped_count(db: Session, campaign_id: str) -> int:
    """Targets skipped at the snapshot (already satisfied): an index range scan, fixed once created."""
    t = CampaignTarget
    return int(db.execute(select(func.count()).where(t.campaign_id == campaign_id, t.state == "skipped")).scalar_one())


def live_counts(db: Session, campaign: Campaign) -> dict[str, int]:
    """``skipped + queued + pending + acked + succeeded + failed + expired + cancelled = targeted`` with
    ``success_when`` (``acked``: waiting for the outcome; ``failed`` includes ``outcome_timeout``); without
    it ``queued + pending + acked + failed + expired + cancelled = targeted`` and ``succeeded = acked``.
    Beside them the pushes. A profile rollout's come from its targets alone (:func:`profile_counts`)."""
    counts = dict.fromkeys((*OUTCOME_COUNTS, "pushed", "push_failed", "push_skipped", "released"), 0)
    t = CampaignTarget
    if campaign.kind == "profile":
        return profile_counts(db, campaign, counts)

    def targets(*where: ColumnElement[bool]) -> int:
        # index range scans on (campaign_id, state, wave, device_id): the already released are never read
        return int(db.execute(select(func.count()).where(t.campaign_id == campaign.id, *where)).scalar_one())

    # the later waves are whole: wave w holds targets (w-1)*wave_size+1 .. w*wave_size of the snapshot (in
    # hash order, ``campaigns._snapshot``) and targets are never deleted but with their campaign, so their
    # size is arithmetic; only their few cancelled targets are read (not the ~half of a fleet still queued)
    outcome = campaign.success_when is not None
    skipped = skipped_count(db, campaign.id) if outcome else 0
    later = max(0, campaign.targeted - skipped - campaign.waves_released * campaign.wave_size)
    counts["queued"] = later - targets(t.state == "cancelled", t.wave > campaign.waves_released) if later else 0
    if campaign.release_cursor is not None:
        counts["queued"] += targets(
            t.state == "queued", t.wave == campaign.waves_released, t.device_id > campaign.release_cursor
        )
    counts["cancelled"] = targets(t.state == "cancelled")  # before their wave was released
    rows = db.execute(
        select(FcmDispatch.status, FcmDispatch.fcm_status, func.count())
        .where(FcmDispatch.campaign_id == campaign.id)
        .group_by(FcmDispatch.status, FcmDispatch.fcm_status)
    ).all()
    for status, fcm_status, n in rows:
        counts["released"] += n
        if status in counts:
            counts[status] += n
        push = {"sent": "pushed", "failed": "push_failed", "skipped": "push_skipped"}.get(fcm_status)
        if push:
            counts[push] += n
    if not outcome:
        counts["succeeded"] = counts["acked"]
        return counts
    decided = dict(
        db.execute(
            select(t.state, func.count())
            .where(t.campaign_id == campaign.id, t.state.in_(("succeeded", "failed")))
            .group_by(t.state)
        ).all()
    )
    counts["skipped"] = skipped
    counts["succeeded"] = int(decided.get("succeeded", 0))
    counts["acked"] -= counts["succeeded"] + int(decided.get("failed", 0))  # decided acks leave "waiting"
    counts["failed"] += int(decided.get("failed", 0))
    return counts


def profile_counts(db: Session, campaign: Campaign, counts: dict[str, int]) -> dict[str, int]:
    """A profile rollout's counts, from its targets' states and its release position: ``queued`` (not
    released), ``pending`` (released, waiting for compliance), ``succeeded``, ``failed``, ``cancelled``;
    ``released`` is what the gates count (pending + succeeded + failed). No command, no push."""
    t = CampaignTarget
    states = dict(db.execute(select(t.state, func.count()).where(t.campaign_id == campaign.id).group_by(t.state)).all())
    queued = int(db.execute(select(func.count()).where(unreleased(campaign))).scalar_one())
    counts["queued"] = queued
    counts["pending"] = int(states.get("queued", 0)) - queued
    for state in ("succeeded", "failed", "cancelled"):
        counts[state] = int(states.get(state, 0))
    counts["released"] = counts["pending"] + counts["succeeded"] + counts["failed"]
    return counts


def gate_figures(counts: dict[str, int], *, outcome: bool = False) -> dict[str, Any]:
    """Shares over the released targets minus cancelled ones (``expired`` counts as a failure).

    With ``success_when`` (``outcome``) they count outcomes: ``succeeded`` is the success, ``failed``
    holds the failed acks and the outcome timeouts; acked targets still waiting are neither.
    """
    base = counts["released"] - _released_cancelled(counts, outcome)
    failures = counts["failed"] + counts["expired"]
    return {
        "base": base,
        "failure_pct": 100.0 * failures / base if base > 0 else 0.0,
        "success_pct": 100.0 * counts["succeeded"] / base if base > 0 else 0.0,
    }


def _released_cancelled(counts: dict[str, int], outcome: bool) -> int:
    """Cancelled commands among the released ones (the rest of ``cancelled`` never left the queue)."""
    finished = counts["acked"] + counts["failed"] + counts["expired"] + counts["pending"]
    if outcome:  # decided acks moved from "acked" to "succeeded" (a timeout to "failed")
        finished += counts["succeeded"]
    return max(0, counts["released"] - finished)
