"""Profiles over HTTP on both databases: apply/plan/versions/rollback/delete, ties and bad documents, the
heartbeat's profile hash, delivery with ETag/304, status reports verified by the server, compliance."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.models import DeviceCompliance, ProfileVersion, WebhookOutbox
from core.profiles.effective import refresh_stale
from core.profiles.sweep import profile_sweep
from tests.support.inventory import app, body
from tests.support.profiles import blocked, profile, required

POS = profile(
    "pos",
    "store=42",
    priority=10,
    apps=[required("com.acme.pos", 4200), blocked("com.evil.game")],
    os={"min_api_level": 30},
    settings={"wifi": {"ssid": "store"}},
)


def _versions(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return int(db.scalar(select(func.count()).select_from(ProfileVersion)) or 0)


def test_apply_plan_versions_rollback_delete(client: TestClient[Any], admin: dict[str, str]) -> None:
    first = client.post("/v1/profiles", json=POS, headers=admin)
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["changed"]) == (1, True)
    assert client.post("/v1/profiles", json=POS, headers=admin).json()["changed"] is False
    newer = {**POS, "settings": {"wifi": {"ssid": "other"}}}
    planned = client.post("/v1/profiles/plan", json=newer, headers=admin).json()
    assert planned["diff"] == [{"key": "settings/wifi", "old": {"ssid": "store"}, "new": {"ssid": "other"}}]
    assert client.get("/v1/profiles/pos", headers=admin).json()["version"] == 1  # plan wrote nothing
    assert client.post("/v1/profiles", json=newer, headers=admin).json()["version"] == 2
    rolled = client.post("/v1/profiles/pos/rollback", json={"to_version": 1}, headers=admin).json()
    assert rolled["version"] == 3 and rolled["diff"][0]["new"] == {"ssid": "store"}
    assert [v["version"] for v in client.get("/v1/profiles/pos/history", headers=admin).json()["items"]] == [3, 2, 1]
    assert client.get("/v1/profiles/pos?version=2", headers=admin).json()["document"]["settings"]["wifi"] == {
        "ssid": "other"
    }
    assert [p["name"] for p in client.get("/v1/profiles", headers=admin).json()["items"]] == ["pos"]
    assert client.delete("/v1/profiles/pos", headers=admin).status_code == 200
    assert client.get("/v1/profiles", headers=admin).json()["items"] == []
    assert client.get("/v1/profiles/pos", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("document", "status", "field"),
    [
        ({**POS, "colour": "red"}, 422, "colour"),
        ({**POS, "apps": [{"package": "com.a.b", "install": "maybe"}]}, 422, "apps[0].install"),
        ({**POS, "apps": [required("com.a.b"), required("com.a.b")]}, 422, "apps[1].package"),
        ({**POS, "selector": "store in (42"}, 422, "selector"),
        ({**POS, "name": "tie", "selector": "", "settings": {"wifi": 1}}, 409, None),
    ],
)
def test_bad_documents_and_ties_write_nothing(
    client: TestClient[Any],
    admin: dict[str, str],
    session_factory: sessionmaker[Session],
    document: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    if status == 409:
        assert client.post("/v1/profiles", json=POS, headers=admin).status_code == 200
    before = _versions(session_factory)
    refused = client.post("/v1/profiles", json=document, headers=admin)
    assert refused.status_code == status, refused.text
    if field is not None:
        assert field in refused.json()["errors"][0]["field"]
    assert _versions(session_factory) == before


def test_delivery_status_and_verification(
    client: TestClient[Any], admin: dict[str, str], enroll: Any, auth: Any, session_factory: sessionmaker[Session]
) -> None:
    headers = auth(enroll("dev_p1"))
    client.patch("/v1/devices/dev_p1/labels", json={"set": {"store": "42"}}, headers=admin)
    assert client.post("/v1/profiles", json=POS, headers=admin).status_code == 200
    with session_factory.begin() as db:  # the maintenance sweep, for the device that enrolled meanwhile
        refresh_stale(db, client.app.state.settings)
    beat = client.post("/v1/heartbeat", json={}, headers=headers).json()
    digest = beat["profile"]
    fetched = client.get("/v1/profile", headers=headers)
    assert fetched.status_code == 200 and fetched.json()["effective_hash"] == digest
    assert fetched.headers["etag"] == f'"{digest}"'
    assert fetched.json()["document"]["apps"][0] == required("com.acme.pos", 4200)
    again = client.get("/v1/profile", headers={**headers, "If-None-Match": fetched.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    stale = client.post("/v1/profile/status", json={"effective_hash": "0" * 64, "items": []}, headers=headers)
    assert stale.status_code == 409 and stale.json()["code"] == "profile_not_current"

    # the device claims everything is fine, but its inventory says pos is at 4100 and the game is installed
    client.put("/v1/inventory", json=body(apps=[app("com.acme.pos", 4100), app("com.evil.game", 1)]), headers=headers)
    claims = {
        "effective_hash": digest,
        "items": [
            {"key": "apps/com.acme.pos", "state": "compliant"},
            {"key": "apps/com.evil.game", "state": "compliant"},
            {"key": "settings/wifi", "state": "compliant"},
            {"key": "os", "state": "compliant"},
        ],
    }
    judged = client.post("/v1/profile/status", json=claims, headers=headers)
    assert judged.status_code == 200, judged.text
    items = {i["key"]: i for i in judged.json()["items"]}
    assert judged.json()["state"] == "noncompliant"
    assert judged.json()["reasons"] == ["APP_INSTALLED", "APP_NOT_UPDATED"]
    assert items["apps/com.acme.pos"]["disagreement"] == {"reported": "compliant", "reason": None}
    assert items["apps/com.acme.pos"]["verified"] is True
    assert items["settings/wifi"] == {"key": "settings/wifi", "state": "compliant", "verified": False}
    assert items["os"]["state"] == "compliant"  # API 30 >= 30
    assert client.post("/v1/profile/status", json=claims, headers=headers).json() == judged.json()  # idempotent
    shown = client.get("/v1/devices/dev_p1/compliance", headers=admin).json()
    assert shown["state"] == "noncompliant" and shown["reasons"] == ["APP_INSTALLED", "APP_NOT_UPDATED"]
    fleet = client.get("/v1/compliance", params={"by": "reason"}, headers=admin).json()
    assert fleet["states"]["noncompliant"] == 1
    assert {g["key"] for g in fleet["groups"]} == {"APP_INSTALLED", "APP_NOT_UPDATED"}
    picked = client.get("/v1/devices", params={"selector": "@noncompliant(APP_NOT_UPDATED)"}, headers=admin).json()
    assert [d["device_id"] for d in picked["items"]] == ["dev_p1"]
    effective = client.get("/v1/devices/dev_p1/effective-profile", headers=admin).json()
    assert effective["effective_hash"] == digest
    assert {k["key"]: k["profile"] for k in effective["keys"]}["apps/com.acme.pos"] == "pos"

    # the device fixes it: the server agrees
    client.put("/v1/inventory", json=body(apps=[app("com.acme.pos", 4200)]), headers=headers)
    fixed = client.post("/v1/profile/status", json=claims, headers=headers).json()
    assert fixed["state"] == "compliant" and fixed["reasons"] == []
    compliant = client.get("/v1/devices", params={"selector": "@compliance=compliant"}, headers=admin).json()
    assert "dev_p1" in [d["device_id"] for d in compliant["items"]]


def test_compliance_webhooks_fire_on_changes_only(
    client: TestClient[Any], admin: dict[str, str], enroll: Any, auth: Any, session_factory: sessionmaker[Session]
) -> None:
    client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/x", "events": ["device.noncompliant", "device.compliant"]},
        headers=admin,
    )
    headers = auth(enroll("dev_w1"))
    client.post("/v1/profiles", json=profile("all", apps=[required("com.acme.pos")]), headers=admin)
    digest = client.get("/v1/profile", headers=headers).json()["effective_hash"]
    client.put("/v1/inventory", json=body(apps=[]), headers=headers)
    report = {"effective_hash": digest, "items": []}
    for _ in range(2):
        answer = client.post("/v1/profile/status", json=report, headers=headers)
        assert answer.json()["state"] == "noncompliant", answer.text
    client.put("/v1/inventory", json=body(apps=[app("com.acme.pos", 1)]), headers=headers)
    assert client.post("/v1/profile/status", json=report, headers=headers).json()["state"] == "compliant"
    # the app is removed and the device says nothing: the sweep judges it again from its inventory
    client.put("/v1/inventory", json=body(apps=[]), headers=headers)
    profile_sweep(session_factory, client.app.state.settings)  # (the server's own sweep may be first)
    shown = client.get("/v1/devices/dev_w1/compliance", headers=admin).json()
    assert (shown["state"], shown["reasons"]) == ("noncompliant", ["APP_NOT_INSTALLED"])
    assert not profile_sweep(session_factory, client.app.state.settings)  # judged once
    with session_factory() as db:
        events = db.scalars(select(WebhookOutbox.event_type).order_by(WebhookOutbox.id)).all()
    assert events == ["device.noncompliant", "device.compliant", "device.noncompliant"]


def test_hostile_bodies_and_scoped_keys(
    client: TestClient[Any], admin: dict[str, str], enroll: Any, session_factory: sessionmaker[Session]
) -> None:
    from core.access import keys as admin_keys

    huge = {**POS, "settings": {"blob": "x" * (300 * 1024)}}
    assert client.post("/v1/profiles", json=huge, headers=admin).status_code == 413
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    nested = client.post("/v1/profiles", json={**POS, "settings": {"deep": deep}}, headers=admin)
    assert nested.status_code == 400  # the API's body guard refuses the nesting before anything is parsed
    assert _versions(session_factory) == 0

    enroll("dev_s42")
    enroll("dev_s7")
    client.patch("/v1/devices/dev_s42/labels", json={"set": {"store": "42"}}, headers=admin)
    client.patch("/v1/devices/dev_s7/labels", json={"set": {"store": "7"}}, headers=admin)
    with session_factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="store42", role="operator", scope="store=42")
    scoped = {"Authorization": f"Bearer {secret}"}
    refused = client.post("/v1/profiles", json=POS, headers=scoped)
    assert refused.status_code == 403 and refused.json()["code"] == "out_of_scope"
    assert client.get("/v1/compliance", headers=scoped).json()["total"] == 1  # its store's device only
    assert client.get("/v1/compliance", headers=admin).json()["total"] == 2
    assert client.get("/v1/devices/dev_s7/compliance", headers=scoped).status_code == 404
    assert client.get("/v1/devices/dev_s42/effective-profile", headers=scoped).status_code == 200


@pytest.mark.parametrize(
    ("item", "field"),
    [
        # schemathesis found a NUL passing the API's checks that PostgreSQL's JSON refuses (a generic 422)
        ({"key": "apps/com.acme.pos", "state": "pending", "detail": "disk\x00full"}, "items[0].detail"),
        ({"key": "settings/wi\x00fi", "state": "compliant"}, "items[0].key"),
        ({"key": "os", "state": "noncompliant", "reason": "API_LEVEL", "detail": "\x1b[31mred"}, "items[0].detail"),
        ({"key": "agent\u202e", "state": "pending"}, "items[0].key"),
    ],
)
def test_a_status_item_with_a_control_character_is_refused_by_name(
    client: TestClient[Any],
    admin: dict[str, str],
    enroll: Any,
    auth: Any,
    session_factory: sessionmaker[Session],
    item: dict[str, Any],
    field: str,
) -> None:
    headers = auth(enroll("dev_nul"))
    assert client.post("/v1/profiles", json=profile("all", apps=[required("com.acme.pos")]), headers=admin).is_success
    with session_factory.begin() as db:
        refresh_stale(db, client.app.state.settings)
    digest = client.post("/v1/heartbeat", json={}, headers=headers).json()["profile"]
    refused = client.post("/v1/profile/status", json={"effective_hash": digest, "items": [item]}, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == field
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(DeviceCompliance)) == 0
