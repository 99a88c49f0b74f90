"""The effective profile: every matching profile merged, lowest priority first; kept per device, set-based.

A device's matched profiles are rows of ``device_profiles``; its *combination* is the ``name:version`` of
each, aggregated in SQL. Each combination is merged once in Python (there are few: at most one per
distinct set of matching profiles, not one per device) into ``profile_effective`` with its hash, and one
``UPDATE ... FROM`` moves ``devices.effective_hash`` for every device whose combination's hash differs.

A profile change recomputes that profile's memberships by difference (:func:`rematch`) and moves the hash
of every device whose combination changed. A label or inventory change marks its device
``devices.profile_stale`` (``core.devices.labels``, ``core.inventory.store``), and :func:`refresh_stale`
recomputes the marked devices' memberships (one ``INSERT ... SELECT`` per profile over the compiled
selector, through a partial index of the marked devices) and effective hashes: the maintenance sweep
for all of them, a device's profile fetch for itself. Nothing here loops over devices in Python.

A row whose ``version`` is set is *held* by a profile rollout (``core.profiles.holds``): the device counts at
that version (0: not a member at all) whatever the profile's current version, and neither :func:`rematch`
nor :func:`refresh_stale` touches it; the rollout's wave releases it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from core.base.errors import NotFound
from core.base.settings import Settings
from core.base.validation import canonical_json, payload_hash
from core.devices import selectors
from core.models import HELD_OUT, Device, DeviceProfile, Profile, ProfileEffective, ProfileVersion
from core.profiles.document import keys
from core.storage.dialect import insert_for, string_agg, xact_lock
from core.storage.types import utcnow

#: held (PostgreSQL) while memberships and effective hashes are recomputed: an apply, the sweep and a device's
#: fetch never interleave their deletes and inserts of ``device_profiles``
LOCK = "nexmdm:profiles"
#: ``(name, version, document)`` of one matched profile
Layer = tuple[str, int, dict[str, Any]]


def order(layers: list[Layer]) -> list[Layer]:
    """Lowest priority first (then by name: a tie on a key both set is refused at apply time)."""
    return sorted(layers, key=lambda layer: (layer[2]["priority"], layer[0]))


def merge(layers: list[Layer]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The effective document of ``layers``, and per key where it came from and what it overrode.

    The document names its profiles and versions, so its hash changes with any new version that matches.
    """
    provenance: dict[str, dict[str, Any]] = {}
    for name, version, document in order(layers):
        for key, value in keys(document).items():
            below = provenance.get(key)
            overrides = [] if below is None else [*below["overrides"], _source(below)]
            provenance[key] = {"value": value, "profile": name, "version": version, "overrides": overrides}
    effective: dict[str, Any] = {
        "profiles": [{"name": n, "version": v, "priority": d["priority"]} for n, v, d in order(layers)],
        "apps": [],
        "settings": {},
    }
    for key in sorted(provenance):
        value = provenance[key]["value"]
        kind, _, rest = key.partition("/")
        if kind == "apps":
            effective["apps"].append(value)
        elif kind == "settings":
            effective["settings"][rest] = value
        else:
            effective[key] = value
    return effective, provenance


def _source(entry: dict[str, Any]) -> dict[str, Any]:
    return {"profile": entry["profile"], "version": entry["version"], "value": entry["value"]}


def effective_hash(effective: dict[str, Any]) -> str:
    return payload_hash(effective)


def in_profile() -> ColumnElement[bool]:
    """The ``device_profiles`` row makes its device a member (it follows the profile or is held at a version)."""
    return or_(DeviceProfile.version.is_(None), DeviceProfile.version != HELD_OUT)


def version_held() -> ColumnElement[int]:
    """The version a member row counts at: the one it is held at, else the profile's current one."""
    return func.coalesce(DeviceProfile.version, Profile.current_version)


def _row_of(name: Any) -> Any:
    """Some row of profile ``name`` for the outer query's device (held or not)."""
    row = select(DeviceProfile.device_id).where(DeviceProfile.device_id == Device.id, DeviceProfile.name == name)
    return exists(row)


def _combos(db: Session, which: ColumnElement[bool]) -> Any:
    """``(device_id, combo)`` of the devices ``which`` selects that have at least one live profile."""
    label = Profile.name + literal(":") + cast(version_held(), String)
    query = (
        select(DeviceProfile.device_id.label("device_id"), string_agg(db, label, ",").label("combo"))
        .join(Profile, Profile.name == DeviceProfile.name)
        .where(Profile.deleted_at.is_(None), in_profile(), DeviceProfile.device_id.in_(select(Device.id).where(which)))
        .group_by(DeviceProfile.device_id)
    )
    return query.subquery("combos")


def _layers(db: Session, combo: str) -> list[Layer]:
    pairs = [part.rsplit(":", 1) for part in combo.split(",")]
    wanted = or_(*(and_(ProfileVersion.name == n, ProfileVersion.version == int(v)) for n, v in pairs))
    rows = db.execute(select(ProfileVersion.name, ProfileVersion.version, ProfileVersion.document).where(wanted))
    return [(r.name, r.version, r.document) for r in rows]


def _store_combinations(db: Session, combos: Any) -> None:
    """Merge and store every combination not stored yet (one per distinct set of matched versions)."""
    missing = db.execute(
        select(combos.c.combo)
        .distinct()
        .where(~exists(select(ProfileEffective.combo).where(ProfileEffective.combo == combos.c.combo)))
    ).scalars()
    rows = []
    for combo in missing:
        document, _ = merge(_layers(db, combo))
        rows.append({"combo": combo, "hash": effective_hash(document), "document": document, "created_at": utcnow()})
    if rows:
        db.execute(insert_for(db, ProfileEffective).on_conflict_do_nothing(index_elements=["combo"]), rows)


def _move_hashes(db: Session, which: ColumnElement[bool]) -> None:
    now = utcnow()
    combos = _combos(db, which)
    _store_combinations(db, combos)
    db.execute(
        update(Device)
        .where(
            Device.id == combos.c.device_id,
            ProfileEffective.combo == combos.c.combo,
            Device.effective_hash.is_distinct_from(ProfileEffective.hash),
        )
        .values(effective_hash=ProfileEffective.hash, effective_since=now, compliance_state="pending")
        .execution_options(synchronize_session=False)
    )
    # NOT EXISTS, not NOT IN: PostgreSQL plans it as an anti-join (a NOT IN over 100,000 rows that does not
    # fit work_mem is a per-row subplan)
    member = (
        select(DeviceProfile.device_id)
        .join(Profile, Profile.name == DeviceProfile.name)
        .where(DeviceProfile.device_id == Device.id, Profile.deleted_at.is_(None), in_profile())
    )
    db.execute(
        update(Device)
        .where(which, Device.effective_hash.is_not(None), ~exists(member))
        .values(effective_hash=None, effective_since=now, compliance_state="compliant")
        .execution_options(synchronize_session=False)
    )


def move_hashes(db: Session, which: ColumnElement[bool]) -> None:
    """Move the effective hash of the devices ``which`` selects to what their rows say now (a rollout's wave)."""
    _move_hashes(db, which)


def rematch(db: Session, settings: Settings, name: str, selector_text: str | None) -> None:
    """A profile changed (``selector_text``; ``None``: deleted): its memberships become who it matches now,
    by difference (rows of devices it no longer matches go, the new ones come; held rows stay), and every
    device whose combination's hash changed gets it, in one ``UPDATE`` of those rows only. Under the lock."""
    xact_lock(db, LOCK)
    mine = DeviceProfile.name == name
    if selector_text is None:
        db.execute(delete(DeviceProfile).where(mine).execution_options(synchronize_session=False))
    else:
        matching = selectors.where_clause(selectors.parse(selector_text), settings)
        still = select(Device.id).where(Device.id == DeviceProfile.device_id, matching)
        gone = delete(DeviceProfile).where(mine, DeviceProfile.version.is_(None), ~exists(still))
        db.execute(gone.execution_options(synchronize_session=False))
        held = select(DeviceProfile.device_id).where(mine, DeviceProfile.device_id == Device.id)
        new = select(Device.id, literal(name)).where(matching, ~exists(held))
        db.execute(insert(DeviceProfile).from_select(["device_id", "name"], new))
    _move_hashes(db, true())  # writes only the rows whose hash differs


def refresh_stale(db: Session, settings: Settings, device_id: str | None = None) -> None:
    """Recompute the memberships and effective hashes of the devices marked stale (all, or one), then clear
    their marks. Rows a rollout holds stay as they are."""
    xact_lock(db, LOCK)
    which: ColumnElement[bool] = and_(Device.profile_stale, Device.id == device_id if device_id else true())
    stale = select(Device.id).where(which)
    db.execute(
        delete(DeviceProfile)
        .where(DeviceProfile.device_id.in_(stale), DeviceProfile.version.is_(None))
        .execution_options(synchronize_session=False)
    )
    live = db.execute(select(Profile.name, Profile.selector).where(Profile.deleted_at.is_(None))).all()
    for name, selector_text in live:
        matching = select(Device.id, literal(name)).where(
            which, selectors.where_clause(selectors.parse(selector_text), settings), ~_row_of(name)
        )
        db.execute(insert(DeviceProfile).from_select(["device_id", "name"], matching))
    _move_hashes(db, which)
    db.execute(update(Device).where(which).values(profile_stale=False).execution_options(synchronize_session=False))


def prune_combinations(db: Session) -> None:
    """Forget the combinations no device holds any more (``profile_effective`` stays as small as the
    combinations in use; one that comes back is merged again). Under the lock, after a profile change."""
    held = db.execute(select(Device.effective_hash).distinct().where(Device.effective_hash.is_not(None))).scalars()
    db.execute(
        delete(ProfileEffective)
        .where(ProfileEffective.hash.not_in(list(held)))
        .execution_options(synchronize_session=False)
    )


def refresh_device(db: Session, settings: Settings, device_id: str) -> None:
    """A device whose labels or inventory changed, recomputed on demand (its profile fetch)."""
    if db.execute(select(Device.profile_stale).where(Device.id == device_id)).scalar():
        refresh_stale(db, settings, device_id)


def document_of(db: Session, effective: str) -> dict[str, Any] | None:
    """The effective document a hash names."""
    row = db.execute(select(ProfileEffective.document).where(ProfileEffective.hash == effective).limit(1)).first()
    return None if row is None else dict(row.document)


def device_layers(db: Session, device_id: str) -> list[Layer]:
    """The live profiles a device matches now, at their current versions (or the ones a rollout holds)."""
    rows = db.execute(
        select(ProfileVersion.name, ProfileVersion.version, ProfileVersion.document)
        .join(DeviceProfile, DeviceProfile.name == ProfileVersion.name)
        .join(Profile, and_(Profile.name == ProfileVersion.name, version_held() == ProfileVersion.version))
        .where(DeviceProfile.device_id == device_id, Profile.deleted_at.is_(None), in_profile())
    )
    return [(r.name, r.version, r.document) for r in rows]


def same(a: Any, b: Any) -> bool:
    return canonical_json(a) == canonical_json(b)


def view(db: Session, settings: Settings, device_id: str) -> dict[str, Any]:
    """A device's effective profile, each key with the profile and version that set it and the lower layers
    it overrides (``NotFound`` for an unknown device)."""
    if db.get(Device, device_id) is None:
        raise NotFound(f"no device {device_id!r}")
    refresh_device(db, settings, device_id)
    document, provenance = merge(device_layers(db, device_id))
    layered = bool(document["profiles"])
    return {
        "device_id": device_id,
        "effective_hash": effective_hash(document) if layered else None,
        "document": document if layered else None,
        "keys": [{"key": key, **entry} for key, entry in sorted(provenance.items())],
    }
