"""Profile rollouts for tests: apply with waves as the CLI would, read hashes, report compliance."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.campaigns import profile_release, profile_rollouts
from core.models import Device
from core.profiles import compliance, effective
from tests.support.profiles import ACTOR


def roll(
    factory: sessionmaker[Session], settings: Settings, document: dict[str, Any], rollout: dict[str, Any] | None
) -> dict[str, Any]:
    with factory.begin() as db:
        return profile_rollouts.apply(db, settings, document, ACTOR, rollout)


def hashes(factory: sessionmaker[Session]) -> dict[str, str | None]:
    with factory() as db:
        return dict(db.execute(select(Device.id, Device.effective_hash).order_by(Device.id)).all())


def fresh(factory: sessionmaker[Session], settings: Settings) -> None:
    """Every device's memberships computed (new devices are marked stale until the sweep)."""
    with factory.begin() as db:
        effective.refresh_stale(db, settings)


def report(
    factory: sessionmaker[Session], settings: Settings, device_ids: list[str], state: str, now: datetime | None = None
) -> None:
    """Each device reports every item of its effective profile in ``state`` (and its rollouts hear of it)."""
    with factory.begin() as db:
        for device_id in device_ids:
            device = db.get(Device, device_id)
            assert device is not None and device.effective_hash is not None
            document = effective.document_of(db, device.effective_hash) or {}
            items = [
                {"key": key, "state": state, **({"reason": "APP_NOT_INSTALLED"} if state == "noncompliant" else {})}
                for key in compliance.item_keys(document)
            ]
            compliance.report(db, settings, device, {"effective_hash": device.effective_hash, "items": items})
            profile_release.check_device(db, device_id, now)
