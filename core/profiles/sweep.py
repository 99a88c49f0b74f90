"""The maintenance leader's profile duty, every round: devices marked stale (their labels or inventory
changed, or they enrolled) get their matched profiles and effective hash recomputed, set-based, devices
whose inventory changed after their last status report are judged again (``core.profiles.compliance``) and
their noncompliant apps remediated (``core.profiles.remediation``), and pending devices past their grace get
their compliance state (``core.profiles.grace``)."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.models import Device
from core.profiles import grace
from core.profiles.compliance import rejudge_changed
from core.profiles.effective import refresh_stale
from core.profiles.remediation import remediate_judged_since, retry_due
from core.storage.types import utcnow


def profile_sweep(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """Recompute the stale devices, and judge again the devices whose inventory changed since their last
    status report, and end the grace of the pending devices past it; False when there was nothing to do."""
    with sessions() as db, db.begin():
        stale = bool(db.execute(select(exists().where(Device.profile_stale))).scalar())
        if stale:
            refresh_stale(db, settings)
        since = utcnow()
        judged = rejudge_changed(db)
        if judged:
            remediate_judged_since(db, settings, since)
        expired = grace.expire(db, settings)
        retried = retry_due(db, settings)  # a failed install is retried the next day without a new judgement
    return stale or judged > 0 or expired > 0 or bool(retried)
