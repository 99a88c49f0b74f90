"""A campaign's counts, from one ``GROUP BY`` on the indexed ``campaign_id`` (frozen when it ends)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from core.models import Campaign, CampaignTarget, FcmDispatch

STATUS_COUNTS = ("queued", "pending", "acked", "failed", "expired", "cancelled")


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


def live_counts(db: Session, campaign: Campaign) -> dict[str, int]:
    """``queued + pending + acked + failed + expired + cancelled = targeted``; beside them the pushes."""
    counts = dict.fromkeys((*STATUS_COUNTS, "pushed", "push_failed", "push_skipped", "released"), 0)
    t = CampaignTarget

    def targets(*where: ColumnElement[bool]) -> int:
        # index range scans on (campaign_id, state, wave, device_id): the already released are never read
        return int(db.execute(select(func.count()).where(t.campaign_id == campaign.id, *where)).scalar_one())

    # the later waves are whole: wave w holds targets (w-1)*wave_size+1 .. w*wave_size of the snapshot (in
    # hash order, ``campaigns._snapshot``) and targets are never deleted but with their campaign, so their
    # size is arithmetic; only their few cancelled targets are read (not the ~half of a fleet still queued)
    later = max(0, campaign.targeted - campaign.waves_released * campaign.wave_size)
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
    return counts


def gate_figures(counts: dict[str, int]) -> dict[str, Any]:
    """Shares over the released targets minus cancelled ones (``expired`` counts as a failure)."""
    base = counts["released"] - _released_cancelled(counts)
    failures = counts["failed"] + counts["expired"]
    return {
        "base": base,
        "failure_pct": 100.0 * failures / base if base > 0 else 0.0,
        "success_pct": 100.0 * counts["acked"] / base if base > 0 else 0.0,
    }


def _released_cancelled(counts: dict[str, int]) -> int:
    """Cancelled commands among the released ones (the rest of ``cancelled`` never left the queue)."""
    finished = counts["acked"] + counts["failed"] + counts["expired"] + counts["pending"]
    return max(0, counts["released"] - finished)
