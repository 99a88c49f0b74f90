"""A campaign's counts, from one ``GROUP BY`` on the indexed ``campaign_id`` (frozen when it ends)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import CampaignTarget, FcmDispatch

STATUS_COUNTS = ("queued", "pending", "acked", "failed", "expired", "cancelled")


def live_counts(db: Session, campaign_id: str) -> dict[str, int]:
    """``queued + pending + acked + failed + expired + cancelled = targeted``; beside them the pushes."""
    counts = dict.fromkeys((*STATUS_COUNTS, "pushed", "push_failed", "push_skipped", "released"), 0)
    targets = db.execute(
        select(CampaignTarget.state, func.count())
        .where(CampaignTarget.campaign_id == campaign_id)
        .group_by(CampaignTarget.state)
    ).all()
    for state, n in targets:
        if state == "queued":
            counts["queued"] += n
        elif state == "cancelled":  # cancelled (or its device revoked) before its wave was released
            counts["cancelled"] += n
    rows = db.execute(
        select(FcmDispatch.status, FcmDispatch.fcm_status, func.count())
        .where(FcmDispatch.campaign_id == campaign_id)
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
