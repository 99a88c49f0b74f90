"""The next batch of a wave's release, shared by both kinds of campaign (``core.campaigns.release`` sends
commands, ``core.campaigns.profile_release`` moves profile holds)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from core.models import Campaign, CampaignTarget, Device


def next_batch(db: Session, campaign: Campaign, wave: int, batch: int) -> tuple[ColumnElement[bool], Any]:
    """The condition on ``campaign_targets`` of the next ``batch`` queued targets of ``wave`` after the
    campaign's release cursor, and the batch's last device id (None: the wave ends with this batch).

    A device revoked since the snapshot (or enrolled again since: another generation) is ``cancelled`` here:
    it gets nothing."""
    t = CampaignTarget
    after = campaign.release_cursor or ""
    cond = and_(t.campaign_id == campaign.id, t.wave == wave, t.state == "queued", t.device_id > after)
    boundary = db.execute(
        select(t.device_id).where(cond).order_by(t.device_id).offset(batch - 1).limit(1)
    ).scalar_one_or_none()
    if boundary is not None:
        cond = and_(cond, t.device_id <= boundary)
    gone = select(Device.id).where(
        Device.id == t.device_id, or_(Device.revoked_at.is_not(None), Device.generation != t.generation)
    )
    db.execute(
        update(t).where(cond, gone.exists()).values(state="cancelled").execution_options(synchronize_session=False)
    )
    return cond, boundary
