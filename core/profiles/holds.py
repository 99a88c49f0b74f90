"""Devices held at a profile's version while a profile rollout moves the fleet wave by wave.

Applied with waves (``core.campaigns.profile_rollouts``), a profile's new version does not reach every
device at once. :func:`hold` runs before the new version's memberships are recomputed: every device whose
effective profile the change would move keeps what it has — a member keeps its row, held at the version it
counts at now (``device_profiles.version``); a device only the new version matches gets a row held out
(``HELD_OUT``, not a member). Devices enrolled or relabelled later, and every device the change does not
touch, follow the current version as before. :func:`release` is a wave: the held rows of those devices go,
they match the profile's current selector again and their effective hashes move, set-based. :func:`clear`
ends every hold of a profile (an apply without waves, a rollback or a delete ends the rollout).

The held rows of a profile are exactly its rollout's targets, and nothing else writes them: the
recomputation of memberships (``core.profiles.effective``) leaves them alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, insert, literal, select, update
from sqlalchemy.orm import Session

from core.base.settings import Settings
from core.devices import selectors
from core.models import HELD_OUT, Device, DeviceProfile, Profile
from core.profiles import effective
from core.storage.dialect import xact_lock
from core.storage.operations import rowcount


def _not_excluded(column: Any) -> Any:
    return exists(select(Device.id).where(Device.id == DeviceProfile.device_id, column))


def hold(db: Session, settings: Settings, name: str, selector_text: str, old_version: int | None) -> None:
    """Hold every device the next version of ``name`` (selecting ``selector_text``) would move: members at
    their version (``old_version`` for those following the profile), the devices it will match held out.
    Called under the profiles lock, after the profile row exists and before :func:`effective.rematch`."""
    mine = DeviceProfile.name == name
    matching = selectors.where_clause(selectors.parse(selector_text), settings)
    # held out by an earlier rollout, and not matched by this version either: its effective profile does not
    # change, so it is no target and its row goes
    stale_out = delete(DeviceProfile).where(mine, DeviceProfile.version == HELD_OUT, ~_not_excluded(matching))
    db.execute(stale_out.execution_options(synchronize_session=False))
    if old_version is not None:
        db.execute(
            update(DeviceProfile)
            .where(mine, DeviceProfile.version.is_(None))
            .values(version=old_version)
            .execution_options(synchronize_session=False)
        )
    held = select(DeviceProfile.device_id).where(mine, DeviceProfile.device_id == Device.id)
    new = select(Device.id, literal(name), literal(HELD_OUT)).where(matching, ~exists(held))
    db.execute(insert(DeviceProfile).from_select(["device_id", "name", "version"], new))


def held_devices(name: str) -> Any:
    """``SELECT device_id`` of the devices a rollout of ``name`` holds (its targets)."""
    return select(DeviceProfile.device_id).where(DeviceProfile.name == name, DeviceProfile.version.is_not(None))


def release(db: Session, settings: Settings, name: str, devices: Any) -> int:
    """A wave: the devices ``devices`` (a ``SELECT`` of ids) stop being held; they follow the profile's
    current version where its selector matches them, and their effective hashes move. Returns the holds
    released (0 when they were released already: a repeated release moves nothing)."""
    xact_lock(db, effective.LOCK)
    mine = DeviceProfile.name == name
    released = rowcount(
        db.execute(
            delete(DeviceProfile)
            .where(mine, DeviceProfile.version.is_not(None), DeviceProfile.device_id.in_(devices))
            .execution_options(synchronize_session=False)
        )
    )
    profile = db.get(Profile, name)
    if profile is not None and profile.deleted_at is None:
        matching = selectors.where_clause(selectors.parse(profile.selector), settings)
        held = select(DeviceProfile.device_id).where(mine, DeviceProfile.device_id == Device.id)
        new = select(Device.id, literal(name)).where(Device.id.in_(devices), matching, ~exists(held))
        db.execute(insert(DeviceProfile).from_select(["device_id", "name"], new))
    effective.move_hashes(db, Device.id.in_(devices))
    return released or 0


def clear(db: Session, name: str) -> None:
    """End every hold of ``name``: held-out rows go, held members follow the profile again. Under the
    profiles lock, before :func:`effective.rematch` (which then drops the members it no longer matches)."""
    mine = DeviceProfile.name == name
    db.execute(
        delete(DeviceProfile)
        .where(mine, DeviceProfile.version == HELD_OUT)
        .execution_options(synchronize_session=False)
    )
    db.execute(
        update(DeviceProfile)
        .where(mine, DeviceProfile.version.is_not(None))
        .values(version=None)
        .execution_options(synchronize_session=False)
    )


def forget_device(db: Session, device_id: str) -> None:
    """A device enrolled again (a new generation) is no rollout's any more: its holds go and it is marked
    for the recomputation of its profiles (the next sweep, or its own fetch, gives it the current versions).
    Its targets in rollouts are cancelled by the release and the outcome sweep (another generation)."""
    db.execute(
        delete(DeviceProfile)
        .where(DeviceProfile.device_id == device_id, DeviceProfile.version.is_not(None))
        .execution_options(synchronize_session=False)
    )
    mark = update(Device).where(Device.id == device_id).values(profile_stale=True)
    db.execute(mark.execution_options(synchronize_session=False))
