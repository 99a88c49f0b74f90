"""Profiles as versioned documents: plan, apply, rollback, delete, and the reads (list, show, history).

Versions are immutable; applying a document identical to the current version writes nothing (the
document's SHA-256 decides). Every write is audited (``profile.apply``, ``profile.rollback``,
``profile.delete``) with its per-key diff, and recomputes the effective profile of exactly the devices
the profile matched before or matches now (``core.profiles.effective``), set-based — or, applied with
``hold`` (a profile rollout, ``core.campaigns.profile_rollouts``), holds them where they are
(``core.profiles.holds``) for the rollout's waves to move. An apply without ``hold`` ends every hold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.base.errors import Conflict, InvalidArgument, NotFound
from core.base.settings import Settings
from core.devices import selectors
from core.events.audit import Actor, record
from core.models import ApkBuild, Device, DeviceProfile, Profile, ProfileVersion
from core.profiles import effective, holds
from core.profiles.document import check, diff, keys, sha256
from core.storage.dialect import is_postgresql, xact_lock
from core.storage.types import utcnow


def _live(db: Session, name: str, *, lock: bool = False) -> Profile | None:
    query = select(Profile).where(Profile.name == name)
    if lock and is_postgresql(db):
        query = query.with_for_update()
    return db.execute(query).scalar_one_or_none()


def _version(db: Session, name: str, version: int) -> ProfileVersion:
    row = db.get(ProfileVersion, (name, version))
    if row is None:
        raise NotFound(f"profile {name!r} has no version {version}")
    return row


def current_document(db: Session, name: str) -> dict[str, Any] | None:
    profile = _live(db, name)
    if profile is None or profile.deleted_at is not None:
        return None
    return dict(_version(db, name, profile.current_version).document)


def conflicts(db: Session, document: dict[str, Any]) -> list[dict[str, Any]]:
    """Other live profiles at the same priority that set a key this document sets (a tie nobody wins)."""
    mine = set(keys(document))
    rows = db.execute(
        select(ProfileVersion.name, ProfileVersion.document)
        .join(Profile, (Profile.name == ProfileVersion.name) & (Profile.current_version == ProfileVersion.version))
        .where(Profile.deleted_at.is_(None), Profile.priority == document["priority"], Profile.name != document["name"])
    )
    out = []
    for name, other in rows:
        both = sorted(mine & set(keys(other)))
        if both:
            out.append({"profile": name, "priority": document["priority"], "keys": both})
    return out


def _check_builds(db: Session, document: dict[str, Any]) -> None:
    for i, app in enumerate(document["apps"]):
        if "build" in app:
            build = db.get(ApkBuild, app["build"])
            if build is None or build.removed_at is not None:
                raise InvalidArgument(f"apps[{i}].build: no APK build {app['build']}", field=f"apps[{i}].build")
            # a build uploaded before its package was read (or with an unreadable manifest) is trusted
            if build.package is not None and build.package != app["package"]:
                raise InvalidArgument(
                    f"apps[{i}].build: APK build {build.id} installs {build.package}, not {app['package']}",
                    field=f"apps[{i}].build",
                )


def _affected(db: Session, name: str, document: dict[str, Any], settings: Settings) -> int:
    """Devices whose effective profile changes: the profile's members now, and the devices it will match."""
    matching = selectors.where_clause(selectors.parse(document["selector"]), settings)
    members = Device.id.in_(select(DeviceProfile.device_id).where(DeviceProfile.name == name, effective.in_profile()))
    return int(db.execute(select(func.count()).select_from(Device).where(or_(matching, members))).scalar_one())


def plan(db: Session, settings: Settings, raw: Any) -> dict[str, Any]:
    """What applying ``raw`` would do; writes nothing."""
    document = check(raw)
    _check_builds(db, document)
    old = current_document(db, document["name"])
    unchanged = old is not None and sha256(old) == sha256(document)
    return {
        "name": document["name"],
        "changed": not unchanged,
        "new": old is None,
        "diff": [] if unchanged else diff(old, document),
        "devices_changing": 0 if unchanged else _affected(db, document["name"], document, settings),
        "conflicts": conflicts(db, document),
    }


def apply(
    db: Session, settings: Settings, raw: Any, actor: Actor, *, action: str = "profile.apply", hold: bool = False
) -> dict[str, Any]:
    """Store ``raw`` as the profile's new version (unless it equals the current one) and move the effective
    profiles of the devices it matched or matches (``hold``: hold them where they are instead, for a
    rollout). A tie at the same priority on a key is ``Conflict``."""
    document = check(raw)
    _check_builds(db, document)
    name = document["name"]
    xact_lock(db, effective.LOCK)  # two applies never miss each other's tie
    profile = _live(db, name, lock=True)
    old = None
    old_version = None
    if profile is not None and profile.deleted_at is None:
        old_version = profile.current_version
        old = dict(_version(db, name, profile.current_version).document)
        if sha256(old) == sha256(document):
            return {
                "name": name,
                "version": profile.current_version,
                "changed": False,
                "diff": [],
                "devices_changing": 0,
            }
    tied = conflicts(db, document)
    if tied:
        first = tied[0]
        raise Conflict(
            f"profile {first['profile']!r} has the same priority ({first['priority']}) and also sets "
            f"{', '.join(first['keys'][:5])}: give one of them another priority",
            field="priority",
        )
    now = utcnow()
    last = db.execute(select(func.max(ProfileVersion.version)).where(ProfileVersion.name == name)).scalar()
    version = (last or 0) + 1
    values = {"current_version": version, "selector": document["selector"], "priority": document["priority"]}
    if profile is None:
        db.add(Profile(name=name, created_at=now, updated_at=now, deleted_at=None, **values))
        db.flush()
    else:
        for key, value in {**values, "updated_at": now, "deleted_at": None}.items():
            setattr(profile, key, value)
    db.add(
        ProfileVersion(
            name=name,
            version=version,
            document=document,
            sha256=sha256(document),
            created_by=actor.name[:200],
            created_at=now,
        )
    )
    db.flush()
    changes = diff(old, document)
    count = _affected(db, name, document, settings)
    if hold:  # every device it moves keeps what it has: no membership and no hash changes now
        holds.hold(db, settings, name, document["selector"], old_version)
    else:
        holds.clear(db, name)
        effective.rematch(db, settings, name, document["selector"])
        effective.prune_combinations(db)
    record(db, actor, action, name, version=version, diff=changes)
    return {"name": name, "version": version, "changed": True, "diff": changes, "devices_changing": count}


def rollback(db: Session, settings: Settings, name: str, to_version: int, actor: Actor) -> dict[str, Any]:
    """A new version with the content of ``to_version`` (nothing when it is the current content)."""
    old = _version(db, name, to_version)
    return apply(db, settings, dict(old.document), actor, action="profile.rollback")


def delete(db: Session, settings: Settings, name: str, actor: Actor) -> dict[str, Any]:
    """Delete a profile (its versions are kept; applying it again continues their numbering)."""
    profile = _live(db, name, lock=True)
    if profile is None or profile.deleted_at is not None:
        raise NotFound(f"no profile {name!r}")
    profile.deleted_at = utcnow()
    db.flush()
    effective.rematch(db, settings, name, None)
    effective.prune_combinations(db)
    record(db, actor, "profile.delete", name, version=profile.current_version)
    return {"name": name, "deleted": True, "version": profile.current_version}


def list_profiles(db: Session) -> list[dict[str, Any]]:
    devices = (
        select(DeviceProfile.name, func.count().label("devices"))
        .where(effective.in_profile())
        .group_by(DeviceProfile.name)
        .subquery("members")
    )
    rows = db.execute(
        select(Profile, func.coalesce(devices.c.devices, 0))
        .outerjoin(devices, devices.c.name == Profile.name)
        .where(Profile.deleted_at.is_(None))
        .order_by(Profile.priority, Profile.name)
    ).all()
    return [
        {
            "name": p.name,
            "version": p.current_version,
            "priority": p.priority,
            "selector": p.selector,
            "devices": int(n),
            "updated_at": p.updated_at,
        }
        for p, n in rows
    ]


def show(db: Session, name: str, version: int | None = None) -> dict[str, Any]:
    profile = _live(db, name)
    if profile is None or (profile.deleted_at is not None and version is None):
        raise NotFound(f"no profile {name!r}")
    row = _version(db, name, version or profile.current_version)
    return {
        "name": name,
        "version": row.version,
        "current_version": profile.current_version,
        "deleted": profile.deleted_at is not None,
        "sha256": row.sha256,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "document": row.document,
    }


def history(db: Session, name: str) -> list[dict[str, Any]]:
    """Every version, newest first, with the keys it changed from the one before."""
    rows = (
        db.execute(select(ProfileVersion).where(ProfileVersion.name == name).order_by(ProfileVersion.version))
        .scalars()
        .all()
    )
    if not rows:
        raise NotFound(f"no profile {name!r}")
    out = []
    previous: dict[str, Any] | None = None
    for row in rows:
        out.append(
            {
                "version": row.version,
                "sha256": row.sha256,
                "created_by": row.created_by,
                "created_at": row.created_at,
                "changed_keys": [d["key"] for d in diff(previous, row.document)],
            }
        )
        previous = row.document
    return out[::-1]
