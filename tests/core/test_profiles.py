"""Profiles on both databases: strict documents, immutable versions, idempotent apply, rollback, ties,
layering by priority, and who gets which effective hash as labels and inventories change."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import Conflict, InvalidArgument
from core.base.settings import Settings
from core.devices import labels
from core.inventory.document import check_report
from core.inventory.store import put_inventory
from core.models import ApkBuild, AuditEvent, Device, ProfileEffective, ProfileVersion
from core.profiles import compliance, document, effective, store
from tests.support.fleet import seed_fleet
from tests.support.inventory import app, body
from tests.support.profiles import ACTOR, apply, blocked, profile, required

BAD = [
    ({"name": "x", "colour": 1}, "colour"),
    ({"name": "Bad Name"}, "name"),
    ({"name": "x", "apps": [{"package": "com.a.b", "install": "maybe"}]}, "apps[0].install"),
    ({"name": "x", "apps": [{"package": "com.a.b", "install": "required", "instal": 1}]}, "apps[0].instal"),
    ({"name": "x", "apps": [{"package": "nodots", "install": "required"}]}, "apps[0].package"),
    ({"name": "x", "selector": "store in (42"}, "selector"),
    ({"name": "x", "selector": "@state=online"}, "selector"),
    ({"name": "x", "os": {"min_security_patch": "2026-13-01"}}, "os.min_security_patch"),
    ({"name": "x", "agent": {"min_version": "latest"}}, "agent.min_version"),
    ({"name": "x", "priority": True}, "priority"),
    ({"name": "x", "settings": {"bad key": 1}}, "settings.bad key"),
    ({"name": "x", "apps": [{"package": "com.a.b", "install": "required", "build": 999}]}, "apps[0].build"),
]


@pytest.mark.parametrize(("raw", "path"), BAD)
def test_bad_documents_name_their_path_and_write_nothing(
    raw: dict[str, Any], path: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with pytest.raises(InvalidArgument) as caught, session_factory.begin() as db:
        store.apply(db, settings, raw, ACTOR)
    assert caught.value.field == path
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(ProfileVersion)) == 0


def test_a_build_of_another_package_is_refused_by_plan_and_apply(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_factory.begin() as db:
        known = ApkBuild(version_code=1, version_name="1", filename="a.apk", size_bytes=1, sha256="0" * 64)
        other = ApkBuild(version_code=2, version_name="2", filename="b.apk", size_bytes=1, sha256="0" * 64)
        unknown = ApkBuild(version_code=3, version_name="3", filename="c.apk", size_bytes=1, sha256="0" * 64)
        known.package, other.package = "com.acme.pos", "com.evil.game"
        db.add_all([known, other, unknown])
        db.flush()
        builds = (known.id, other.id, unknown.id)
    wrong = profile("pos", apps=[required("com.acme.pos") | {"build": builds[1]}])
    for write in (store.plan, lambda db, st, raw: store.apply(db, st, raw, ACTOR)):
        with (
            pytest.raises(InvalidArgument, match="installs com.evil.game, not com.acme.pos") as caught,
            session_factory.begin() as db,
        ):
            write(db, settings, wrong)
        assert caught.value.field == "apps[0].build"
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(ProfileVersion)) == 0
    # its own package, or a build whose package was never read (uploaded before 0022): accepted
    right = [required("com.acme.pos") | {"build": builds[0]}, required("com.acme.kiosk") | {"build": builds[2]}]
    assert apply(session_factory, settings, profile("pos", apps=right))["version"] == 1


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"key": "os", "state": "pending", "detail": "disk\x00full"}, "items[0].detail"),
        ({"key": "settings/wi\x00fi", "state": "compliant"}, "items[0].key"),
        ({"key": "agent\u202e", "state": "pending"}, "items[0].key"),
    ],
)
def test_a_status_item_with_a_control_character_is_refused_by_name(item: dict[str, Any], field: str) -> None:
    """Before any write: PostgreSQL's JSON refuses a NUL (issue 24's schemathesis finding)."""
    with pytest.raises(InvalidArgument, match="control characters") as caught:
        compliance.check_report({"effective_hash": "0" * 64, "items": [item]})
    assert caught.value.field == field


def test_yaml_and_size_limits() -> None:
    parsed = document.loads("name: pos\nsettings:\n  wifi: {ssid: store}\n", filename="pos.yaml")
    assert document.check(parsed)["settings"] == {"wifi": {"ssid": "store"}}
    with pytest.raises(InvalidArgument, match="256 KiB"):
        document.loads(b" " * (document.MAX_BYTES + 1))
    with pytest.raises(InvalidArgument, match="line 1"):
        document.loads("name: [unclosed")
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(InvalidArgument, match="deeper"):
        document.check({"name": "x", "settings": {"deep": deep}})


def test_versions_are_immutable_apply_is_idempotent_rollback_makes_a_new_version(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    seed_fleet(session_factory)
    first = apply(session_factory, settings, profile("pos", "store=42", apps=[required("com.acme.pos", 4100)]))
    assert (first["version"], first["changed"]) == (1, True)
    again = apply(session_factory, settings, profile("pos", "store=42", apps=[required("com.acme.pos", 4100)]))
    assert (again["version"], again["changed"]) == (1, False)
    second = apply(session_factory, settings, profile("pos", "store=42", apps=[required("com.acme.pos", 4200)]))
    assert second["version"] == 2
    assert second["diff"] == [
        {
            "key": "apps/com.acme.pos",
            "old": required("com.acme.pos", 4100),
            "new": required("com.acme.pos", 4200),
        }
    ]
    with session_factory.begin() as db:
        back = store.rollback(db, settings, "pos", 1, ACTOR)
        assert back["version"] == 3
        assert store.show(db, "pos")["document"]["apps"] == [required("com.acme.pos", 4100)]
        assert store.show(db, "pos", 2)["document"]["apps"] == [required("com.acme.pos", 4200)]
        assert [h["version"] for h in store.history(db, "pos")] == [3, 2, 1]
        actions = db.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["profile.apply", "profile.apply", "profile.rollback"]


def test_a_tie_on_a_key_both_set_is_a_conflict_and_plan_names_it(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    apply(session_factory, settings, profile("base", settings={"wifi": "a", "ntp": "x"}, priority=10))
    tie = profile("store", "store=42", priority=10, settings={"wifi": "b"})
    with session_factory() as db:
        planned = store.plan(db, settings, tie)
    assert planned["conflicts"] == [{"profile": "base", "priority": 10, "keys": ["settings/wifi"]}]
    with pytest.raises(Conflict, match="base"), session_factory.begin() as db:
        store.apply(db, settings, tie, ACTOR)
    # another key at the same priority is no tie
    apply(session_factory, settings, profile("store", "store=42", priority=10, settings={"lock": True}))


def _hashes(factory: sessionmaker[Session]) -> dict[str, str | None]:
    with factory() as db:
        return dict(db.execute(select(Device.id, Device.effective_hash).where(Device.revoked_at.is_(None))).all())


def test_layering_priority_wins_per_key_and_provenance(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    seed_fleet(session_factory)
    apply(
        session_factory,
        settings,
        profile("base", priority=0, apps=[required("com.acme.pos", 4000), blocked("com.evil.game")], settings={"a": 1}),
    )
    apply(
        session_factory,
        settings,
        profile("store42", "store=42", priority=10, apps=[required("com.acme.pos", 4200)], settings={"b": 2}),
    )
    hashes = _hashes(session_factory)
    with session_factory() as db:
        layers = effective.device_layers(db, "a1")
        doc, provenance = effective.merge(layers)
        planned = store.plan(db, settings, profile("store42", "store=42", priority=10, settings={"b": 3}))
    assert [p["name"] for p in doc["profiles"]] == ["base", "store42"]
    assert doc["apps"] == [required("com.acme.pos", 4200), blocked("com.evil.game")]
    assert doc["settings"] == {"a": 1, "b": 2}
    assert provenance["apps/com.acme.pos"]["profile"] == "store42"
    assert provenance["apps/com.acme.pos"]["overrides"] == [
        {"profile": "base", "version": 1, "value": required("com.acme.pos", 4000)}
    ]
    assert hashes["a1"] == effective.effective_hash(doc)
    assert hashes["a1"] == hashes["a2"] != hashes["a3"]  # a1, a2 are store 42
    assert hashes["a3"] is not None
    assert planned["devices_changing"] == 2


def test_labels_and_inventory_move_a_device_lazily(session_factory: sessionmaker[Session], settings: Settings) -> None:
    seed_fleet(session_factory)
    apply(session_factory, settings, profile("pos", "@app(com.acme.pos)>=4200", apps=[required("com.acme.pos")]))
    apply(session_factory, settings, profile("east", "zone=east", settings={"x": 1}))
    with session_factory.begin() as db:  # the sweep, for the devices that enrolled (they start marked)
        effective.refresh_stale(db, settings)
    assert set(_hashes(session_factory).values()) == {None}
    with session_factory.begin() as db:
        put_inventory(db, "a3", check_report(body(apps=[app("com.acme.pos", 4200)])), settings)
        labels.label_device(db, "a5", {"zone": "east"}, [])
    with session_factory() as db:
        assert set(db.scalars(select(Device.id).where(Device.profile_stale))) == {"a3", "a5"}
    with session_factory.begin() as db:
        effective.refresh_device(db, settings, "a3")  # its own fetch: only a3
        assert db.get(Device, "a5").profile_stale  # type: ignore[union-attr]
        effective.refresh_stale(db, settings)  # the sweep: the rest
    hashes = _hashes(session_factory)
    assert hashes["a3"] is not None and hashes["a5"] is not None and hashes["a3"] != hashes["a5"]
    assert hashes["a1"] is None
    with session_factory.begin() as db:
        labels.label_device(db, "a5", {}, ["zone"])
        effective.refresh_stale(db, settings)
        store.delete(db, settings, "pos", ACTOR)
    assert _hashes(session_factory)["a5"] is None and _hashes(session_factory)["a3"] is None
    with session_factory() as db:  # no device holds a combination any more: none is kept
        assert db.scalar(select(func.count()).select_from(ProfileEffective)) == 0
