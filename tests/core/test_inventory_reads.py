"""The fleet's app counts: the whole fleet's page (a loose index scan and an index-only count) answers as a
selector matching every device does, leaves revoked devices out, and fills a page past packages held only
by them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.inventory import reads
from core.inventory.document import check_report
from core.inventory.store import put_inventory
from core.models import Device
from core.storage.types import utcnow
from tests.support.databases import add_device
from tests.support.inventory import app, body


def _report(factory: sessionmaker[Session], settings: Settings, device: str, apps: list[dict[str, Any]]) -> None:
    add_device(factory, device)
    with factory.begin() as db:
        put_inventory(db, device, check_report(body(apps=apps)), settings)


def _fleet(factory: sessionmaker[Session], settings: Settings) -> None:
    """d0–d3 hold com.acme.pos (4200 ×2 named 42.0 and 42.1, 4100, 4300) and one package of their own; the
    revoked device holds com.acme.pos 4300 and the packages before and between the others (``com.aaa``,
    ``org.only.d1a``)."""
    names = ["42.0", "42.1", "41.0", "43.0"]
    for i, code in enumerate([4200, 4200, 4100, 4300]):
        pos = app("com.acme.pos", code, version_name=names[i])
        _report(factory, settings, f"d{i}", [pos, app(f"org.only.d{i}", 1)])
    revoked = [app("com.aaa.gone", 1), app("com.acme.pos", 4300), app("org.only.d1a", 1)]
    _report(factory, settings, "gone", revoked)
    with factory.begin() as db:
        db.execute(update(Device).where(Device.id == "gone").values(revoked_at=utcnow()))


def test_the_fleet_page_leaves_revoked_devices_out_and_fills_past_them(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _fleet(session_factory, settings)
    with session_factory() as db:
        every = reads.fleet_apps(db, settings)
        assert [r["package"] for r in every] == ["com.acme.pos"] + [f"org.only.d{i}" for i in range(4)]
        assert every[0] == {
            "package": "com.acme.pos",
            "devices": 4,
            "versions": 3,
            "top_version_code": 4200,
            "top_version_name": "42.1",
            "top_share": 0.5,
        }
        # com.aaa.gone and org.only.d1a are held by the revoked device only: the pages fill past them
        assert [r["package"] for r in reads.fleet_apps(db, settings, limit=2)] == ["com.acme.pos", "org.only.d0"]
        page = reads.fleet_apps(db, settings, limit=2, after="org.only.d0")
        assert [r["package"] for r in page] == ["org.only.d1", "org.only.d2"]
        assert reads.fleet_apps(db, settings, after="org.only.d3") == []
        # the same answers as a selector's (a semi-join with the devices it matches)
        assert reads.fleet_apps(db, settings, selector="@app(com.acme.pos)") == every
        for limit in (1, 2, 3):
            assert reads.fleet_apps(db, settings, limit=limit) == every[:limit]


def test_apps_show_of_the_fleet_leaves_revoked_devices_out(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _fleet(session_factory, settings)
    with session_factory() as db:
        shown = reads.package_versions(db, settings, "com.acme.pos")
        assert shown == reads.package_versions(db, settings, "com.acme.pos", selector="@app(com.acme.pos)")
        assert shown["devices"] == 4
        assert [(v["version_code"], v["version_name"], v["devices"]) for v in shown["versions"]] == [
            (4300, "43.0", 1),
            (4200, "42.1", 2),
            (4100, "41.0", 1),
        ]
