"""The inventory protocol over HTTP: heartbeat asks, PUT/PATCH/409, ownership, hostile bodies, reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.inventory.document import canonical_hash
from core.models import DeviceApp, DeviceAppChange, DeviceInventory
from tests.support.inventory import APPS, DEVICE, app, body


def _counts(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with factory() as db:
        return tuple(  # type: ignore[return-value]
            db.scalar(select(func.count()).select_from(m)) for m in (DeviceInventory, DeviceApp, DeviceAppChange)
        )


def test_heartbeat_asks_put_stores_then_heartbeat_is_quiet(client: TestClient[Any], make_token, enroll, auth) -> None:
    answer = client.post("/v1/enroll", json={"device_id": "dev_p"}, headers=auth(make_token()))
    assert answer.json()["protocol"] == 2  # docs/device-protocol.md
    headers = auth(enroll("dev_inv"))
    document = body(apps=APPS)
    beat = client.post("/v1/heartbeat", json={"inventory_hash": document["hash"]}, headers=headers)
    assert beat.json()["inventory"] == "wanted"
    stored = client.put("/v1/inventory", json=document, headers=headers)
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"hash": document["hash"], "changed": True, "app_changes": 3}
    again = client.put("/v1/inventory", json=document, headers=headers)
    assert again.json()["changed"] is False
    quiet = client.post("/v1/heartbeat", json={"inventory_hash": document["hash"]}, headers=headers)
    assert "inventory" not in quiet.json()  # steady state: not a byte more than before
    other = client.post("/v1/heartbeat", json={"inventory_hash": "c" * 64}, headers=headers)
    assert other.json()["inventory"] == "wanted"


def test_patch_and_its_stale_base(client: TestClient[Any], enroll, auth, session_factory) -> None:
    headers = auth(enroll("dev_inv"))
    document = body(apps=APPS)
    client.put("/v1/inventory", json=document, headers=headers)
    after = {a["package"]: a for a in APPS} | {"com.acme.pos": app("com.acme.pos", 4200)}
    delta = {
        "base_hash": document["hash"],
        "hash": canonical_hash(DEVICE, after),
        "apps": {"upsert": [app("com.acme.pos", 4200)]},
    }
    patched = client.patch("/v1/inventory", json=delta, headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["app_changes"] == 1
    before = _counts(session_factory)
    stale = client.patch("/v1/inventory", json=delta, headers=headers)
    assert stale.status_code == 409
    assert stale.json()["code"] == "inventory_base_mismatch"
    assert _counts(session_factory) == before


def test_a_device_reports_only_its_own(client: TestClient[Any], enroll, auth, admin) -> None:
    mine, theirs = auth(enroll("dev_a")), auth(enroll("dev_b"))
    client.put("/v1/inventory", json=body(apps=APPS), headers=mine)
    smuggled = {**body(apps=[app("com.x.y", 1)]), "device_id": "dev_a"}
    refused = client.put("/v1/inventory", json=smuggled, headers=theirs)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "device_id"
    assert (
        client.put("/v1/inventory", json=body(apps=APPS), headers={"Authorization": "Bearer nxd_bad"}).status_code
        == 401
    )
    assert client.get("/v1/devices/dev_b/inventory", headers=admin).status_code == 404
    assert client.get("/v1/devices/dev_a/inventory", headers=admin).json()["app_count"] == 3


@pytest.mark.parametrize(
    ("document", "field", "code"),
    [
        ({**body(apps=APPS), "hash": "d" * 64}, "hash", "inventory_hash_mismatch"),
        (body(apps=[{"package": "nodots", "version_code": 1}]), "apps[0].package", "validation_failed"),
        (body(apps=[{"package": "com.a", "version_code": -5}]), "apps[0].version_code", "validation_failed"),
        (body(apps=[{"package": "com.a", "version_code": 1, "x": 1}]), "apps[0].x", "validation_failed"),
        (body(apps=[app(f"com.a.p{i}", 1) for i in range(2001)]), "apps", "validation_failed"),
        (body(device={"api_level": 2000}), "device.api_level", "validation_failed"),
        (body(device={"security_patch": "2026-02-30"}), "device.security_patch", "invalid_argument"),
        (body(apps=[app("com.a.b", 1), app("com.a.b", 2)]), "apps[1].package", "invalid_argument"),
    ],
)
def test_hostile_reports_are_422_naming_the_field_and_write_nothing(
    client: TestClient[Any], enroll, auth, session_factory, document: dict[str, Any], field: str, code: str
) -> None:
    headers = auth(enroll("dev_h"))
    response = client.put("/v1/inventory", json=document, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert response.json()["errors"][0]["field"] == field
    assert _counts(session_factory) == (0, 0, 0)


def test_a_body_over_one_mebibyte_is_413(client: TestClient[Any], enroll, auth, session_factory) -> None:
    headers = auth(enroll("dev_big"))
    huge = json.dumps(
        body(device={"model": "x"}, apps=[app("com.a.b", 1, installer="i" * 255)] * 1) | {"pad": "x" * (1 << 20)}
    )
    response = client.put("/v1/inventory", content=huge, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert _counts(session_factory) == (0, 0, 0)


def test_admin_reads(client: TestClient[Any], enroll, auth, admin) -> None:
    for i, code in enumerate((4200, 4200, 4100)):
        client.put("/v1/inventory", json=body(apps=[app("com.acme.pos", code)]), headers=auth(enroll(f"dev_{i}")))
    apps = client.get("/v1/devices/dev_0/apps", headers=admin).json()
    assert [a["package"] for a in apps["items"]] == ["com.acme.pos"] and apps["next_cursor"] is None
    changes = client.get("/v1/devices/dev_0/app-changes", headers=admin).json()["items"]
    assert [(c["change"], c["to_version_code"]) for c in changes] == [("installed", 4200)]
    fleet = client.get("/v1/apps", headers=admin).json()["items"]
    assert fleet == [
        {
            "package": "com.acme.pos",
            "devices": 3,
            "versions": 2,
            "top_version_code": 4200,
            "top_version_name": "42.0",
            "top_share": 0.6667,
        }
    ]
    behind = client.get("/v1/apps/com.acme.pos", params={"selector": "@app(com.acme.pos)<4200"}, headers=admin)
    assert behind.json()["versions"] == [{"version_code": 4100, "version_name": "41.0", "devices": 1, "share": 1.0}]
    listed = client.get("/v1/devices", params={"selector": "@app(com.acme.pos)>=4200"}, headers=admin).json()
    assert [d["device_id"] for d in listed["items"]] == ["dev_0", "dev_1"]
    assert client.get("/v1/apps/not_a_package", headers=admin).status_code == 400
    assert client.get("/v1/apps/com.none.here", headers=admin).status_code == 404
    bad = client.get("/v1/apps", params={"selector": "@app(nodots)"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_selector"
