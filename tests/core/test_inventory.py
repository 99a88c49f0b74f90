"""Inventory reports in core: the hash, a full replace with its change rows, deltas, the lock, retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.inventory import reads
from core.inventory.cleanup import cleanup_old_app_changes
from core.inventory.document import HashMismatch, canonical_hash, check_delta, check_report
from core.inventory.store import BaseMismatch, patch_inventory, put_inventory
from core.models import Device, DeviceApp, DeviceAppChange, DeviceInventory
from core.storage.types import utcnow
from tests.support.databases import add_device, run_together
from tests.support.inventory import APPS, DEVICE, app, body


def _put(factory: sessionmaker[Session], settings: Settings, document: dict[str, Any], device: str = "dev_001") -> Any:
    with factory.begin() as db:
        return put_inventory(db, device, check_report(document), settings)


def _changes(db: Session) -> list[tuple[str, str, int | None, int | None]]:
    rows = db.execute(
        select(
            DeviceAppChange.package,
            DeviceAppChange.change,
            DeviceAppChange.from_version_code,
            DeviceAppChange.to_version_code,
        ).order_by(DeviceAppChange.id)
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_the_hash_is_the_documented_canonical_form() -> None:
    import hashlib
    import json

    apps = [app("org.b.x", 2), app("com.a.y", 1)]
    expected = hashlib.sha256(
        json.dumps(
            {"device": DEVICE, "apps": sorted(apps, key=lambda a: a["package"])}, sort_keys=True, separators=(",", ":")
        ).encode()
    ).hexdigest()
    assert canonical_hash(DEVICE, apps) == expected
    # null and absent mean the same
    assert canonical_hash({**DEVICE, "serial": None}, [{**apps[0], "installer": None}, apps[1]]) == expected


def test_a_report_hashed_as_sent_with_its_nulls_is_accepted_too() -> None:
    import hashlib
    import json

    device, apps = {**DEVICE, "serial": None}, [{**app("com.a.y", 1), "installer": None}]
    as_sent = hashlib.sha256(
        json.dumps({"device": device, "apps": apps}, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert as_sent != canonical_hash(device, apps)
    assert check_report({"hash": as_sent, "device": device, "apps": apps}).hash == as_sent
    with pytest.raises(HashMismatch):  # any other hash is still refused
        check_report({"hash": "0" * 64, "device": device, "apps": apps})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hash": "0" * 64}, "hash"),
        ({"apps": [{"package": "nodots", "version_code": 1}]}, "apps[0].package"),
        ({"apps": [{"package": "com.1bad", "version_code": 1}]}, "apps[0].package"),
        ({"apps": [{"package": "com.a", "version_code": -1}]}, "apps[0].version_code"),
        ({"apps": [{"package": "com.a", "version_code": True}]}, "apps[0].version_code"),
        ({"apps": [{"package": "com.a", "version_code": 1, "version_name": "x" * 65}]}, "apps[0].version_name"),
        ({"apps": [{"package": "com.a", "version_code": 1, "signing_sha256": "zz"}]}, "apps[0].signing_sha256"),
        ({"apps": [{"package": "com.a", "version_code": 1, "root": True}]}, "apps[0].root"),
        ({"apps": [app("com.a", 1), app("com.a", 2)]}, "apps[1].package"),
        ({"apps": [app(f"com.a.p{i}", 1) for i in range(2001)]}, "apps"),
        ({"device": {**DEVICE, "imei": "1"}}, "device.imei"),
        ({"device": {**DEVICE, "security_patch": "2026-13-01"}}, "device.security_patch"),
        ({"device": {**DEVICE, "api_level": "33"}}, "device.api_level"),
        ({"extra": 1}, "extra"),
    ],
)
def test_hostile_documents_name_the_field(change: dict[str, Any], field: str) -> None:
    document = body(apps=APPS)
    document.update(change)
    if "hash" not in change:
        document["hash"] = canonical_hash(document.get("device", {}), document.get("apps", []))
    with pytest.raises(InvalidArgument) as caught:
        check_report(document)
    assert caught.value.field == field
    assert isinstance(caught.value, HashMismatch) == (field == "hash")


def test_put_replaces_and_records_changes(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    first = _put(session_factory, settings, body(apps=APPS))
    assert first.changed and first.app_changes == 3
    again = _put(session_factory, settings, body(apps=APPS))
    assert not again.changed
    second = body(
        device={**DEVICE, "storage_free_mb": 100},
        apps=[app("com.acme.pos", 4200), app("com.android.chrome", 11000, system=True), app("net.new.app", 1)],
    )
    assert _put(session_factory, settings, second).app_changes == 4
    with session_factory() as db:
        assert _changes(db)[3:] == [
            ("com.acme.pos", "updated", 4100, 4200),
            ("com.android.chrome", "downgraded", 12000, 11000),
            ("net.new.app", "installed", None, 1),
            ("org.example.notes", "removed", 7, None),
        ]
        assert sorted(db.scalars(select(DeviceApp.package))) == ["com.acme.pos", "com.android.chrome", "net.new.app"]
        held = db.get(DeviceInventory, device)
        assert held is not None and held.hash == second["hash"] and held.storage_free_mb == 100
        assert held.serial is None and held.app_count == 3
        assert db.get(Device, device).inventory_hash == second["hash"]  # type: ignore[union-attr]
    # the same hash again writes nothing: no change row, no new times
    with session_factory() as db:
        before = db.get(DeviceInventory, device).updated_at  # type: ignore[union-attr]
    assert not _put(session_factory, settings, second).changed
    with session_factory() as db:
        assert db.get(DeviceInventory, device).updated_at == before  # type: ignore[union-attr]
        assert db.scalar(select(func.count()).select_from(DeviceAppChange)) == 7


def test_serial_is_kept_only_when_enabled(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    with_serial = body(device={**DEVICE, "serial": "R58M1234"}, apps=APPS)
    _put(session_factory, settings, with_serial)
    with session_factory() as db:
        assert db.get(DeviceInventory, device).serial is None  # type: ignore[union-attr]
    _put(session_factory, settings.with_overrides(inventory_serial=True), body(device={**DEVICE, "serial": "X1"}))
    with session_factory() as db:
        assert db.get(DeviceInventory, device).serial == "X1"  # type: ignore[union-attr]


def _delta(base: str, result: tuple[dict[str, Any], dict[str, dict[str, Any]]], **changes: Any) -> dict[str, Any]:
    """A PATCH body on ``base`` whose hash is that of ``result`` (the device fields and apps after it)."""
    return {"base_hash": base, "hash": canonical_hash(*result), **changes}


def test_patch_applies_a_delta_on_the_held_base(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    start = body(apps=APPS)
    _put(session_factory, settings, start)
    apps = {a["package"]: a for a in APPS}
    apps["com.acme.pos"] = app("com.acme.pos", 4200)
    del apps["org.example.notes"]
    new_device = {**DEVICE, "storage_free_mb": 10}
    delta = _delta(
        start["hash"],
        (new_device, apps),
        device={"storage_free_mb": 10},
        apps={"upsert": [app("com.acme.pos", 4200)], "remove": ["org.example.notes"]},
    )
    with session_factory.begin() as db:
        stored = patch_inventory(db, device, check_delta(delta), settings)
    assert stored.changed and stored.app_changes == 2
    # the same delta again: its base is stale now, nothing is written
    with pytest.raises(BaseMismatch), session_factory.begin() as db:
        patch_inventory(db, device, check_delta(delta), settings)
    # a delta whose claimed hash is not the result
    wrong = {**delta, "base_hash": delta["hash"], "hash": "a" * 64, "apps": {"upsert": [app("com.x.y", 1)]}}
    with pytest.raises(HashMismatch), session_factory.begin() as db:
        patch_inventory(db, device, check_delta(wrong), settings)
    with session_factory() as db:
        assert db.get(DeviceInventory, device).hash == delta["hash"]  # type: ignore[union-attr]
        assert db.scalar(select(func.count()).select_from(DeviceAppChange)) == 5
        assert reads.device_inventory(db, device)["device"] == new_device


def test_patch_without_an_inventory_is_a_base_mismatch(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    delta = _delta("b" * 64, (DEVICE, {}), device=DEVICE)
    with pytest.raises(BaseMismatch), session_factory.begin() as db:
        patch_inventory(db, device, check_delta(delta), settings)
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(DeviceInventory)) == 0


def test_concurrent_reports_never_interleave(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    documents = [body(apps=[app(f"com.r{i}.p{j}", i * 10 + j) for j in range(40)]) for i in range(4)]
    run_together(4, lambda i: _put(session_factory, settings, documents[i]))
    with session_factory() as db:
        held = db.get(DeviceInventory, device)
        assert held is not None
        winner = next(d for d in documents if d["hash"] == held.hash)
        assert sorted(db.scalars(select(DeviceApp.package))) == sorted(a["package"] for a in winner["apps"])


def test_reads_and_fleet_summary(session_factory: sessionmaker[Session], settings: Settings) -> None:
    for i in range(4):
        add_device(session_factory, f"d{i}")
        apps = [app("com.acme.pos", 4200 if i < 3 else 4100), app(f"org.only.d{i}", 1)]
        _put(session_factory, settings, body(apps=apps), device=f"d{i}")
    with session_factory() as db:
        summary = {row["package"]: row for row in reads.fleet_apps(db, settings)}
        assert summary["com.acme.pos"] == {
            "package": "com.acme.pos",
            "devices": 4,
            "versions": 2,
            "top_version_code": 4200,
            "top_version_name": "42.0",
            "top_share": 0.75,
        }
        assert len(summary) == 5
        page = reads.fleet_apps(db, settings, limit=2, after="com.acme.pos")
        assert [r["package"] for r in page] == ["org.only.d0", "org.only.d1"]
        versions = reads.package_versions(db, settings, "com.acme.pos", selector="@app(org.only.d3)")
        assert versions["devices"] == 1 and versions["versions"][0]["version_code"] == 4100
        assert [a["package"] for a in reads.device_apps(db, "d0", limit=1)] == ["com.acme.pos"]
        changes = reads.app_changes(db, "d0")
        assert [c["change"] for c in changes] == ["installed", "installed"]


def test_app_changes_are_retained_for_their_period(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    _put(session_factory, settings, body(apps=APPS))
    with session_factory.begin() as db:
        oldest = db.scalar(select(func.min(DeviceAppChange.id)))
        db.execute(update(DeviceAppChange).where(DeviceAppChange.id == oldest).values(at=utcnow() - timedelta(days=91)))
    with session_factory() as db:
        result = cleanup_old_app_changes(db)
        db.commit()
        assert result["deleted"] == 1
        assert db.scalar(select(func.count()).select_from(DeviceAppChange)) == 2


def test_a_new_generation_is_asked_again_and_may_send_the_same_inventory(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    document = body(apps=APPS)
    _put(session_factory, settings, document)
    with session_factory.begin() as db:  # what re-enrolling a revoked id does to the summary
        db.execute(update(Device).where(Device.id == device).values(inventory_hash=None, inventory_seen_at=None))
    assert not _put(session_factory, settings, document).changed
    with session_factory() as db:
        assert db.get(Device, device).inventory_hash == document["hash"]  # type: ignore[union-attr]


def test_the_protocol_page_examples_are_valid(
    session_factory: sessionmaker[Session], settings: Settings, device: str
) -> None:
    """docs/device-protocol.md: its PUT example's hash is right, and its PATCH example applies to it."""
    import json
    import re
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "device-protocol.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", page, flags=re.DOTALL)]
    put = next(b for b in blocks if "apps" in b and "hash" in b and "base_hash" not in b)
    delta = next(b for b in blocks if "base_hash" in b)
    assert _put(session_factory, settings, put).changed
    with session_factory.begin() as db:
        assert patch_inventory(db, device, check_delta(delta), settings).app_changes == 1


def test_inventory_freshness_is_counted_with_the_device_states(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from core.ops import fleet_stats

    for name in ("fresh", "old", "never", "gone"):
        add_device(session_factory, name)
    for name in ("fresh", "old", "gone"):
        _put(session_factory, settings, body(apps=APPS), device=name)
    with session_factory.begin() as db:
        db.execute(update(Device).where(Device.id == "old").values(inventory_seen_at=utcnow() - timedelta(days=2)))
        db.execute(update(Device).where(Device.id == "gone").values(revoked_at=utcnow()))
    with session_factory() as db:
        snapshot = fleet_stats.snapshot(db, settings)
    assert snapshot["inventory_stale"] == {"older_than_a_day": 1, "never": 1}
    assert "inventory_old" not in snapshot["devices"]
