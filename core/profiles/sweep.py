"""The maintenance leader's profile duty: devices marked stale (their labels or inventory changed, or they
enrolled) get their matched profiles and effective hash recomputed, set-based, in one transaction."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.models import Device
from core.profiles.effective import refresh_stale


def profile_sweep(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """Recompute the stale devices; False when there were none (one probe)."""
    with sessions() as db, db.begin():
        if not db.execute(select(exists().where(Device.profile_stale))).scalar():
            return False
        refresh_stale(db, settings)
    return True
