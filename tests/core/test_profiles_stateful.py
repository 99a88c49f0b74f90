"""Property: whatever sequence of profile applies, deletions and label moves, once the sweep has run every
device's effective hash is the merge of exactly the live profiles whose selector matches it now (checked
against a fresh computation), on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import Conflict, NotFound
from core.base.settings import Settings
from core.devices import labels, selectors
from core.models import Device, DeviceLabel, DeviceProfile, Profile, ProfileEffective, ProfileVersion
from core.profiles import effective, store
from tests.support.fleet import seed_fleet
from tests.support.profiles import ACTOR

NAMES = ("p1", "p2", "p3")
SELECTORS = ("", "store=42", "store=7", "ring=canary", "!store", "zone=x", "zone=x,store=7")
DEVICES = ("a1", "a2", "a3", "a4", "a5")

applies = st.tuples(
    st.just("apply"),
    st.sampled_from(NAMES),
    st.sampled_from(SELECTORS),
    st.integers(0, 2),
    st.sampled_from(("wifi", "ntp", "lock")),
    st.integers(0, 3),
)
moves = st.tuples(st.just("label"), st.sampled_from(DEVICES), st.booleans())
deletions = st.tuples(st.just("delete"), st.sampled_from(NAMES))
OPERATIONS = st.lists(st.one_of(applies, moves, deletions, st.just(("sweep",))), max_size=10)


def _reset(db: Session, settings: Settings) -> None:
    """No profile, no zone label, every device swept (only label moves mark a device from here)."""
    for model in (DeviceProfile, ProfileEffective, ProfileVersion, Profile):
        db.execute(delete(model))
    db.execute(delete(DeviceLabel).where(DeviceLabel.key == "zone"))
    db.execute(update(Device).values(effective_hash=None, effective_since=None, profile_stale=True))
    effective.refresh_stale(db, settings)


def _run(db: Session, settings: Settings, operation: tuple[Any, ...]) -> None:
    kind = operation[0]
    if kind == "apply":
        _, name, selector, priority, key, value = operation
        document = {"name": name, "selector": selector, "priority": priority, "settings": {key: value}}
        try:
            with db.begin_nested():
                store.apply(db, settings, document, ACTOR)
        except Conflict:
            pass  # a tie with another profile at that priority: refused, nothing written
    elif kind == "label":
        _, device, on = operation
        labels.label_device(db, device, {"zone": "x"} if on else {}, [] if on else ["zone"])
    elif kind == "delete":
        try:
            with db.begin_nested():
                store.delete(db, settings, operation[1], ACTOR)
        except NotFound:
            pass
    else:
        effective.refresh_stale(db, settings)


def _expected(db: Session, settings: Settings) -> dict[str, str | None]:
    """From scratch: each live profile's matches by its selector, merged per device."""
    layers: dict[str, list[effective.Layer]] = {d: [] for d in DEVICES}
    for profile in db.scalars(select(Profile).where(Profile.deleted_at.is_(None))):
        document = db.get(ProfileVersion, (profile.name, profile.current_version)).document  # type: ignore[union-attr]
        for device in db.scalars(selectors.matching_ids(selectors.parse(profile.selector), settings)):
            if device in layers:
                layers[device].append((profile.name, profile.current_version, document))
    return {d: effective.effective_hash(effective.merge(ls)[0]) if ls else None for d, ls in layers.items()}


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
@example(operations=[("apply", "p1", "zone=x", 0, "wifi", 1), ("label", "a1", True)])  # a label moves a device in
@example(operations=[("apply", "p1", "", 0, "wifi", 1), ("apply", "p1", "store=42", 0, "wifi", 1)])  # and out
@example(operations=[("apply", "p1", "", 1, "ntp", 1), ("apply", "p2", "store=7", 2, "ntp", 2), ("delete", "p2")])
def test_effective_hashes_follow_profiles_and_labels(
    operations: list[tuple[Any, ...]], session_factory: sessionmaker[Session], settings: Settings, seeded: None
) -> None:
    with session_factory.begin() as db:
        _reset(db, settings)
        for operation in operations:
            _run(db, settings, operation)
        effective.refresh_stale(db, settings)  # the sweep, as the maintenance leader runs it
        held = dict(db.execute(select(Device.id, Device.effective_hash).where(Device.id.in_(DEVICES))).all())
        assert held == _expected(db, settings), operations


@pytest.fixture
def seeded(session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
