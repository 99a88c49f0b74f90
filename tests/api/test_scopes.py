"""Scoped roles and expiring keys over HTTP, on both databases.

The fleet (``tests.support.fleet.FLEET``) has two stores: store 42 (a1, a2 and the revoked r1) and store 7
(a3, a4), and a5 in neither. A key scoped to ``store=42`` must see and reach store 42 only, on every
surface, whatever selector it sends; a device outside its scope is 404, as an unknown one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.models import AdminKey, AuditEvent
from core.storage.types import utcnow
from tests.support.fleet import seed_fleet

STORE_42 = {"a1", "a2", "r1"}


def _key(factory: sessionmaker[Session], name: str, role: str, scope: str | None = None) -> dict[str, str]:
    with factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name=name, role=role, scope=scope)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def keys(session_factory: sessionmaker[Session]) -> dict[str, dict[str, str]]:
    seed_fleet(session_factory)
    return {
        "admin": _key(session_factory, "root", "admin"),
        "store42": _key(session_factory, "store42", "operator", "store=42"),
        "store7": _key(session_factory, "store7", "operator", "store in (7)"),
        "admin42": _key(session_factory, "admin42", "admin", "store=42"),
    }


def _ids(response: Any, field: str = "device_id") -> set[str]:
    assert response.status_code == 200, response.text
    return {item[field] for item in response.json()["items"]}


def test_device_reads_are_limited_to_the_scope(client: TestClient[Any], keys: dict[str, dict[str, str]]) -> None:
    scoped, admin = keys["store42"], keys["admin"]
    assert _ids(client.get("/v1/devices", headers=scoped)) == STORE_42
    assert len(_ids(client.get("/v1/devices", headers=admin))) == 6
    # the request's selector is ANDed with the scope: hostile selectors cannot reach past it
    for hostile, expected in (
        ("store=7", set()),
        ("store in (7,42)", {"a1", "a2"}),
        ("!store", set()),
        ("store!=42", set()),
        ("all", {"a1", "a2"}),
        ('@model="Pixel 8"', {"a2"}),
        ("@agent_version>=1.0", {"a1", "a2"}),
    ):
        assert _ids(client.get("/v1/devices", params={"selector": hostile}, headers=scoped)) == expected, hostile
    assert _ids(client.get("/v1/devices", params={"offline": "true"}, headers=scoped)) <= STORE_42
    # one device, its heartbeats: outside the scope is 404, worded as an unknown device
    assert client.get("/v1/devices/a1", headers=scoped).status_code == 200
    for device in ("a3", "a5"):
        for path in (f"/v1/devices/{device}", f"/v1/devices/{device}/heartbeats"):
            outside = client.get(path, headers=scoped)
            assert outside.status_code == 404 and outside.json()["detail"] == f"no device {device!r}", path
    assert client.get("/v1/devices/a1/heartbeats", headers=scoped).json()["items"] == []
    assert client.get("/v1/devices/a3/heartbeats", headers=admin).status_code == 200
    # label counts
    counts = client.get("/v1/labels", headers=scoped).json()["items"]
    assert {(c["key"], c["value"]): c["devices"] for c in counts} == {("store", "42"): 2, ("ring", "canary"): 1}
    # the revocation of a device outside the scope is 404 and changes nothing
    assert client.post("/v1/devices/a4/revoke", headers=scoped).status_code == 404
    assert client.get("/v1/devices/a4", headers=admin).json()["state"] != "revoked"


def test_label_changes_and_commands_stay_inside_the_scope(
    client: TestClient[Any], keys: dict[str, dict[str, str]], session_factory: sessionmaker[Session]
) -> None:
    scoped, admin = keys["store42"], keys["admin"]
    assert client.patch("/v1/devices/a3/labels", json={"set": {"x": "1"}}, headers=scoped).status_code == 404
    ok = client.patch("/v1/devices/a1/labels", json={"set": {"x": "1"}}, headers=scoped)
    assert ok.status_code == 200 and ok.json()["labels"]["x"] == "1"
    # the label the scope is defined by: moving a device out of the scope (or in) is refused
    for body in ({"set": {"store": "7"}}, {"remove": ["store"]}):
        refused = client.patch("/v1/devices/a1/labels", json=body, headers=scoped)
        assert refused.status_code == 403 and refused.json()["code"] == "out_of_scope", body
        refused = client.post("/v1/devices/labels", json={"selector": "all", **body}, headers=scoped)
        assert refused.status_code == 403 and refused.json()["code"] == "out_of_scope", body
    bulk = client.post("/v1/devices/labels", json={"selector": "!floor", "set": {"floor": "1"}}, headers=scoped)
    assert bulk.json()["matched"] == 2
    everyone = client.get("/v1/devices", params={"selector": "floor=1"}, headers=admin)
    assert _ids(everyone) == {"a1", "a2"}

    # commands: to a device outside the scope 404; listing, reading and cancelling limited alike
    def command(device: str, headers: dict[str, str], key: str) -> Any:
        return client.post(
            f"/v1/devices/{device}/commands", json={"action": "ping"}, headers=headers | {"Idempotency-Key": key}
        )

    assert command("a3", scoped, "s-1").status_code == 404
    assert command("a1", scoped, "s-2").status_code == 202
    assert command("a3", admin, "u-1").status_code == 202
    assert {c["request_id"] for c in client.get("/v1/commands", headers=scoped).json()["items"]} == {"s-2"}
    assert len(client.get("/v1/commands", headers=admin).json()["items"]) == 2
    assert client.get("/v1/commands/u-1", headers=scoped).status_code == 404
    assert client.post("/v1/commands/u-1/cancel", headers=scoped).status_code == 404
    assert client.get("/v1/commands/u-1", headers=admin).json()["status"] == "pending"
    assert client.post("/v1/commands/s-2/cancel", headers=scoped).json()["status"] == "cancelled"
    # the audit rows of a scoped key carry its scope
    with session_factory() as db:
        rows = db.execute(select(AuditEvent).where(AuditEvent.actor == "key:store42")).scalars().all()
    assert {r.action for r in rows} >= {"device.label", "command.create", "command.cancel"}
    assert all((r.details or {}).get("scope") == "store=42" for r in rows)


def test_campaigns_of_a_scoped_key(client: TestClient[Any], keys: dict[str, dict[str, str]]) -> None:
    scoped, other, admin = keys["store42"], keys["store7"], keys["admin"]

    def create(headers: dict[str, str], key: str, **body: Any) -> Any:
        return client.post("/v1/campaigns", json={"action": "ping", **body}, headers=headers | {"Idempotency-Key": key})

    # `all` is all of the scope: the snapshot takes the scope's devices only (r1 is revoked)
    mine = create(scoped, "c-1", selector="all")
    assert mine.status_code == 202, mine.text
    assert mine.json()["targeted"] == 2 and mine.json()["scope"] == "store=42"
    assert create(scoped, "c-2", selector="store=7").json()["code"] == "invalid_argument"  # no target: 422
    assert create(scoped, "c-3", device_ids=["a1", "a3"]).status_code == 404
    # the same Idempotency-Key from another scope is not a replay of this campaign
    assert create(other, "c-1", selector="all").status_code == 422
    unscoped = create(admin, "c-4", selector="all").json()
    assert unscoped["targeted"] == 5 and unscoped["scope"] is None
    theirs = create(other, "c-5", selector="all").json()
    assert theirs["targeted"] == 2

    assert _ids(client.get("/v1/campaigns", headers=scoped), "id") == {mine.json()["id"]}
    assert _ids(client.get("/v1/campaigns", headers=admin), "id") == {mine.json()["id"], unscoped["id"], theirs["id"]}
    campaign = mine.json()["id"]
    assert _ids(client.get(f"/v1/campaigns/{campaign}/devices", headers=scoped)) == {"a1", "a2"}
    assert client.post(f"/v1/campaigns/{campaign}/pause", headers=scoped).json()["status"] == "paused"
    # an unscoped campaign: 403; another scope's: 404
    for path in ("", "/devices"):
        denied = client.get(f"/v1/campaigns/{unscoped['id']}{path}", headers=scoped)
        assert denied.status_code == 403 and denied.json()["code"] == "out_of_scope"
        assert client.get(f"/v1/campaigns/{theirs['id']}{path}", headers=scoped).status_code == 404
    for action in ("pause", "cancel", "resume"):
        assert client.post(f"/v1/campaigns/{unscoped['id']}/{action}", headers=scoped).status_code == 403
        assert client.post(f"/v1/campaigns/{theirs['id']}/{action}", headers=scoped).status_code == 404
    assert client.get(f"/v1/campaigns/{unscoped['id']}", headers=admin).json()["status"] == "running"


def test_a_scoped_key_cannot_manage_keys_webhooks_or_tokens(
    client: TestClient[Any], keys: dict[str, dict[str, str]]
) -> None:
    scoped_admin = keys["admin42"]
    for method, path, body in (
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", {"name": "escalate", "role": "admin"}),
        ("POST", "/v1/keys/root/revoke", None),
        ("GET", "/v1/webhooks", None),
        ("POST", "/v1/webhooks", {"url": "https://example.com/h", "events": ["device.enrolled"]}),
        ("POST", "/v1/tokens", {"uses": 1}),
        ("GET", "/v1/tokens", None),
        ("GET", "/v1/audit", None),
    ):
        response = client.request(method, path, json=body, headers=scoped_admin)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "out_of_scope"
    assert client.get("/v1/keys", headers=keys["admin"]).status_code == 200


def test_an_expired_key_is_401_key_expired(
    client: TestClient[Any], session_factory: sessionmaker[Session], keys: dict[str, dict[str, str]]
) -> None:
    with session_factory.begin() as db:
        secret, key = admin_keys.create_admin_key(db, name="short", role="viewer", expires_in=timedelta(days=90))
    headers = {"Authorization": f"Bearer {secret}"}
    assert key["expires_at"] > utcnow() + timedelta(days=89)
    assert client.get("/v1/devices", headers=headers).status_code == 200
    with session_factory.begin() as db:
        db.execute(update(AdminKey).where(AdminKey.name == "short").values(expires_at=utcnow() - timedelta(seconds=1)))
    with session_factory.begin() as db:  # the alert's gauge: active keys within 14 days of their expiry
        for name, days in (("soon", 10), ("later", 20)):
            admin_keys.create_admin_key(db, name=name, role="viewer", expires_in=timedelta(days=days))
        assert admin_keys.expiring_keys(db) == 1
    expired = client.get("/v1/devices", headers=headers)
    assert expired.status_code == 401 and expired.json()["code"] == "key_expired"
    assert "expired" in expired.json()["detail"]
    unknown = client.get("/v1/devices", headers={"Authorization": "Bearer nxa_" + "0" * 43})
    assert unknown.status_code == 401 and unknown.json()["code"] == "unauthorized"
    listed = {k["name"]: k for k in client.get("/v1/keys", headers=keys["admin"]).json()["items"]}
    assert listed["short"]["state"] == "expired" and listed["store42"]["scope"] == "store=42"
    # created over the API with a scope and a lifetime
    made = client.post(
        "/v1/keys",
        json={"name": "api-made", "role": "viewer", "scope": "store=7", "expires_in_seconds": 3600},
        headers=keys["admin"],
    ).json()
    assert made["scope"] == "store=7" and made["expires_at"] is not None and made["secret"].startswith("nxa_")
    bad = client.post("/v1/keys", json={"name": "bad", "scope": "store in"}, headers=keys["admin"])
    assert bad.status_code == 422


def test_inventories_apps_and_locations_stay_inside_the_scope(
    client: TestClient[Any], keys: dict[str, dict[str, str]], session_factory: sessionmaker[Session], settings: Any
) -> None:
    from core.inventory.document import check_report
    from core.inventory.store import put_inventory
    from tests.support.inventory import body

    with session_factory.begin() as db:
        for device in ("a1", "a3"):  # one inside store 42, one outside
            put_inventory(
                db, device, check_report(body(apps=[{"package": "com.acme.pos", "version_code": 42}])), settings
            )
    scoped, admin = keys["store42"], keys["admin"]
    assert client.get("/v1/apps/com.acme.pos", headers=admin).json()["devices"] == 2
    assert client.get("/v1/apps/com.acme.pos", headers=scoped).json()["devices"] == 1
    assert [a["devices"] for a in client.get("/v1/apps", headers=scoped).json()["items"]] == [1]
    for path in ("inventory", "apps", "app-changes", "location", "locations"):
        assert client.get(f"/v1/devices/a1/{path}", headers=scoped).status_code == 200, path
        outside = client.get(f"/v1/devices/a3/{path}", headers=scoped)
        assert outside.status_code == 404 and outside.json()["detail"] == "no device 'a3'", path
    assert client.get("/v1/actions", headers=scoped).status_code == 200
