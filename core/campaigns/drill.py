"""A campaign's targets one by one (the drill-down of ``campaigns devices``), by device id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument
from core.campaigns.counts import unreleased
from core.campaigns.records import load
from core.models import CampaignTarget, Device, FcmDispatch

DRILL_STATUSES = ("skipped", "queued", "pending", "acked", "succeeded", "failed", "expired", "cancelled")
#: target states that are a status of their own (an outcome), whatever the command's
OUTCOME_STATES = ("skipped", "succeeded", "failed")


def campaign_devices(
    db: Session, campaign_id: str, *, status: str | None = None, limit: int = 100, after: str | None = None
) -> list[dict[str, Any]]:
    """The targets (in one state), by device id: keyset paging with ``after``.

    Each carries the device's model and its ack's ``detail`` and ``error_code``, so finding why targets
    failed is one read.
    """
    campaign = load(db, campaign_id)
    if status is not None and status not in DRILL_STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(DRILL_STATUSES)}", field="status")
    t, d = CampaignTarget, FcmDispatch
    query = (
        select(t.device_id, t.wave, t.state, d.request_id, d.status, d.fcm_status, d.created_at, d.finished_at)
        .add_columns(d.ack_detail, d.error_code, Device.model, t.reason, unreleased(campaign).label("unreleased"))
        .outerjoin(d, d.request_id == literal(campaign_id + ":") + t.device_id)
        .outerjoin(Device, Device.id == t.device_id)
        .where(t.campaign_id == campaign_id)
        .order_by(t.device_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(t.device_id > after)
    if status == "queued":
        query = query.where(unreleased(campaign))
    elif status == "cancelled":
        query = query.where((t.state == "cancelled") | (d.status == "cancelled"))
    elif (
        campaign.kind == "profile" and status is not None
    ):  # no command: the target's state and the release position say it all
        query = query.where(t.state == ("queued" if status == "pending" else status), ~unreleased(campaign))
    elif status == "succeeded" and campaign.success_when is None:  # the ack was the success
        query = query.where(d.status == "acked")
    elif status in OUTCOME_STATES:
        query = query.where((t.state == status) | ((t.state == "queued") & (d.status == status)))
    elif status is not None:
        query = query.where(t.state == "queued", d.status == status)
    out = []
    for row in db.execute(query).mappings():
        status_of = row["state"] if row["state"] in OUTCOME_STATES else row["status"] or row["state"]
        if campaign.kind == "profile" and row["state"] == "queued" and not row["unreleased"]:
            status_of = "pending"  # released, waiting for its device's compliance
        out.append(
            {
                "device_id": row["device_id"],
                "wave": row["wave"],
                "status": status_of,
                "request_id": row["request_id"],
                "fcm_status": row["fcm_status"],
                "released_at": row["created_at"],
                "finished_at": row["finished_at"],
                "model": row["model"],
                "detail": row["ack_detail"],
                "error_code": row["error_code"] if campaign.kind == "command" else row["reason"],
            }
        )
    return out
