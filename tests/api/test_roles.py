"""Roles: every admin route declares its least role, checked by one guard before the body is read.

The table below is the contract: a route registered in the app but missing from it (or declaring another
role) fails ``test_every_admin_route_is_in_the_table``, and every route is tried with each role.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.models import ROLES, AuditEvent
from nexmdm_api import create_app
from tests.support.databases import DatabaseFactory, migrate
from tests.support.routes import admin_routes

#: (method, path) -> least role; the whole of "Roles and audit" in the contract, route by route
ROLE_TABLE: dict[tuple[str, str], str] = {
    ("POST", "/v1/devices/{device_id:str}/commands"): "operator",
    ("GET", "/v1/commands/{request_id:str}"): "viewer",
    ("POST", "/v1/commands/{request_id:str}/cancel"): "operator",
    ("GET", "/v1/commands"): "viewer",
    ("GET", "/v1/devices"): "viewer",
    ("GET", "/v1/devices/{device_id:str}"): "viewer",
    ("GET", "/v1/devices/{device_id:str}/heartbeats"): "viewer",
    ("POST", "/v1/devices/{device_id:str}/revoke"): "operator",
    ("POST", "/v1/apk/builds"): "operator",
    ("GET", "/v1/apk/builds"): "viewer",
    ("GET", "/v1/apk/downloads"): "viewer",
    ("POST", "/v1/tokens"): "operator",
    ("GET", "/v1/tokens"): "viewer",
    ("POST", "/v1/tokens/{token_id:str}/revoke"): "operator",
    ("POST", "/v1/keys"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("POST", "/v1/keys/{name:str}/revoke"): "admin",
    ("GET", "/v1/audit"): "admin",
    ("POST", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks"): "admin",
    ("DELETE", "/v1/webhooks/{endpoint_id:str}"): "admin",
    ("POST", "/v1/webhooks/{endpoint_id:str}/test"): "admin",
    ("GET", "/v1/webhooks/{endpoint_id:str}/deliveries"): "admin",
    ("POST", "/v1/webhooks/deliveries/{delivery_id:int}/redeliver"): "admin",
    ("DELETE", "/v1/apk/builds/{build_id:int}"): "operator",
    ("PATCH", "/v1/devices/{device_id:str}/labels"): "operator",
    ("POST", "/v1/devices/labels"): "operator",
    ("GET", "/v1/labels"): "viewer",
    ("POST", "/v1/campaigns"): "operator",
    ("GET", "/v1/campaigns"): "viewer",
    ("GET", "/v1/campaigns/{campaign_id:str}"): "viewer",
    ("GET", "/v1/campaigns/{campaign_id:str}/devices"): "viewer",
    ("GET", "/v1/campaigns/{campaign_id:str}/failures"): "viewer",
    ("GET", "/v1/campaigns/{campaign_id:str}/failures/devices"): "viewer",
    ("POST", "/v1/campaigns/{campaign_id:str}/pause"): "operator",
    ("POST", "/v1/campaigns/{campaign_id:str}/resume"): "operator",
    ("POST", "/v1/campaigns/{campaign_id:str}/cancel"): "operator",
    ("GET", "/v1/devices/{device_id:str}/inventory"): "viewer",
    ("GET", "/v1/devices/{device_id:str}/apps"): "viewer",
    ("GET", "/v1/devices/{device_id:str}/app-changes"): "viewer",
    ("GET", "/v1/apps"): "viewer",
    ("GET", "/v1/apps/{package:str}"): "viewer",
    ("GET", "/v1/actions"): "viewer",
    ("GET", "/v1/actions/{name:str}"): "viewer",
    # locations are personal data: never a viewer's (every read is audited)
    ("GET", "/v1/devices/{device_id:str}/location"): "operator",
    ("GET", "/v1/devices/{device_id:str}/locations"): "operator",
    ("GET", "/v1/approvals"): "viewer",
    ("GET", "/v1/approvals/{approval_id:str}"): "viewer",
    ("POST", "/v1/approvals/{approval_id:str}/approve"): "admin",
    ("POST", "/v1/approvals/{approval_id:str}/deny"): "admin",
    ("POST", "/v1/approvals/{approval_id:str}/cancel"): "operator",
    ("GET", "/v1/profiles"): "viewer",
    ("POST", "/v1/profiles"): "operator",
    ("POST", "/v1/profiles/plan"): "operator",
    ("GET", "/v1/profiles/{name:str}"): "viewer",
    ("GET", "/v1/profiles/{name:str}/history"): "viewer",
    ("POST", "/v1/profiles/{name:str}/rollback"): "operator",
    ("DELETE", "/v1/profiles/{name:str}"): "operator",
    ("GET", "/v1/devices/{device_id:str}/effective-profile"): "viewer",
    ("GET", "/v1/devices/{device_id:str}/compliance"): "viewer",
    ("GET", "/v1/compliance"): "viewer",
}


#: the routes a scoped key (``operator@store=42``) may call, each limited to its scope in SQL (a device
#: outside it is 404); every other admin route is 403 ``out_of_scope`` for it: keys, webhooks, enrollment
#: tokens, APK builds and downloads, the audit trail (contract: "Scoped roles")
SCOPED_ROUTES: set[tuple[str, str]] = {
    ("POST", "/v1/devices/{device_id:str}/commands"),
    ("GET", "/v1/commands/{request_id:str}"),
    ("POST", "/v1/commands/{request_id:str}/cancel"),
    ("GET", "/v1/commands"),
    ("GET", "/v1/devices"),
    ("GET", "/v1/devices/{device_id:str}"),
    ("GET", "/v1/devices/{device_id:str}/heartbeats"),
    ("POST", "/v1/devices/{device_id:str}/revoke"),
    ("PATCH", "/v1/devices/{device_id:str}/labels"),
    ("POST", "/v1/devices/labels"),
    ("GET", "/v1/labels"),
    ("POST", "/v1/campaigns"),
    ("GET", "/v1/campaigns"),
    ("GET", "/v1/campaigns/{campaign_id:str}"),
    ("GET", "/v1/campaigns/{campaign_id:str}/devices"),
    ("POST", "/v1/campaigns/{campaign_id:str}/pause"),
    ("POST", "/v1/campaigns/{campaign_id:str}/resume"),
    ("POST", "/v1/campaigns/{campaign_id:str}/cancel"),
    ("GET", "/v1/campaigns/{campaign_id:str}/failures"),
    ("GET", "/v1/campaigns/{campaign_id:str}/failures/devices"),
    ("GET", "/v1/devices/{device_id:str}/inventory"),
    ("GET", "/v1/devices/{device_id:str}/apps"),
    ("GET", "/v1/devices/{device_id:str}/app-changes"),
    ("GET", "/v1/apps"),
    ("GET", "/v1/apps/{package:str}"),
    ("GET", "/v1/devices/{device_id:str}/location"),
    ("GET", "/v1/devices/{device_id:str}/locations"),
    ("GET", "/v1/actions"),
    ("GET", "/v1/actions/{name:str}"),
    ("GET", "/v1/devices/{device_id:str}/effective-profile"),
    ("GET", "/v1/devices/{device_id:str}/compliance"),
    ("GET", "/v1/compliance"),
}


def concrete(path: str) -> str:
    dummies = {"device_id": "dev_x", "request_id": "req_x", "token_id": "enr_000000000000", "name": "nobody"}
    dummies |= {"endpoint_id": "whk_000000000000", "package": "com.acme.pos"}
    return re.sub(r"\{(\w+):(\w+)\}", lambda m: "1" if m.group(2) == "int" else dummies.get(m.group(1), "x"), path)


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    # every route is tried without a key too: more 401s than the failed-authentication limit allows
    return settings.with_overrides(auth_failure_limit=0)


@pytest.fixture
def role_keys(session_factory: sessionmaker[Session]) -> dict[str, dict[str, str]]:
    keys = {}
    with session_factory.begin() as db:
        for role in ROLES:
            secret, _ = admin_keys.create_admin_key(db, name=f"k-{role}", role=role)
            keys[role] = {"Authorization": f"Bearer {secret}"}
    return keys


def test_every_admin_route_is_in_the_table(settings: Settings) -> None:
    routes = admin_routes(create_app(settings))
    missing = sorted(set(routes) - set(ROLE_TABLE))
    assert not missing, f"admin routes without a role in ROLE_TABLE: {missing}"
    stale = sorted(set(ROLE_TABLE) - set(routes))
    assert not stale, f"ROLE_TABLE names routes the app does not have: {stale}"
    for key, handler in routes.items():
        assert handler.opt.get("role") == ROLE_TABLE[key], key
        assert bool(handler.opt.get("scoped")) == (key in SCOPED_ROUTES), key


def documented_4xx(document: dict[str, Any], method: str, path: str) -> set[int]:
    """The client errors the OpenAPI document declares for an operation, but the refusals (401, 403, 429)."""
    operation = document["paths"][re.sub(r"\{(\w+):\w+\}", r"{\1}", path)][method.lower()]
    return {int(code) for code in operation["responses"] if code.startswith("4")} - {401, 403, 429}


def test_each_role_against_each_admin_route(client: TestClient[Any], role_keys: dict[str, dict[str, str]]) -> None:
    document = client.get("/schema/openapi.json").json()
    for (method, path), needed in sorted(ROLE_TABLE.items()):
        expected = documented_4xx(document, method, path)
        for role, headers in role_keys.items():
            response = client.request(method, concrete(path), headers=headers)
            allowed = ROLES.index(role) >= ROLES.index(needed)
            if allowed:  # a 2xx, or one of the route's documented answers to an empty body or unknown id
                status = response.status_code
                assert 200 <= status < 300 or status in expected, (method, path, role, response.text)
            else:
                assert response.status_code == 403, (method, path, role, response.text)
                assert response.json()["code"] == "insufficient_role"
        anonymous = client.request(method, concrete(path))
        assert anonymous.status_code == 401, (method, path)


def test_a_scoped_key_reaches_the_scoped_routes_only(
    client: TestClient[Any], session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="k-scoped", role="admin", scope="store=42")
    headers = {"Authorization": f"Bearer {secret}"}
    document = client.get("/schema/openapi.json").json()
    for method, path in sorted(ROLE_TABLE):
        response = client.request(method, concrete(path), headers=headers)
        if (method, path) in SCOPED_ROUTES:
            status = response.status_code
            assert 200 <= status < 300 or status in documented_4xx(document, method, path), (
                method,
                path,
                response.text,
            )
        else:
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["code"] == "out_of_scope"


def test_the_document_names_the_role_of_each_operation(client: TestClient[Any]) -> None:
    document = client.get("/schema/openapi.json").json()
    for (method, path), needed in ROLE_TABLE.items():
        operation = document["paths"][re.sub(r":\w+\}", "}", path)][method.lower()]
        assert operation["security"] == [{"adminKey": [needed]}], (method, path)
        assert "403" in operation["responses"], (method, path)


def test_role_is_checked_before_the_body_is_read(client: TestClient[Any], role_keys: dict[str, dict[str, str]]):
    huge = b"{" * (1024 * 1024)  # neither JSON nor within the 64 KiB limit: reading it would be 400 or 413
    headers = role_keys["viewer"] | {"Content-Type": "application/json", "Idempotency-Key": "k1"}
    response = client.post("/v1/devices/dev_x/commands", content=huge, headers=headers)
    assert response.status_code == 403
    response = client.post("/v1/tokens", content=huge, headers={"Authorization": "Bearer nxa_wrong"})
    assert response.status_code == 401


def test_refusals_are_audited_in_aggregate(
    api_settings: Settings, engine: Any, role_keys: dict[str, dict[str, str]], session_factory: sessionmaker[Session]
) -> None:
    with TestClient(create_app(api_settings)) as client:
        for _ in range(7):
            assert client.post("/v1/devices/dev_x/revoke", headers=role_keys["viewer"]).status_code == 403
        for i in range(5):
            assert client.get("/v1/devices", headers={"Authorization": f"Bearer nxa_{i:043d}"}).status_code == 401
        assert client.get("/v1/devices", headers={"Authorization": "Bearer nope"}).status_code == 401
    # the app wrote its counters when it stopped
    with session_factory() as db:
        rows = db.execute(select(AuditEvent).where(AuditEvent.outcome == "denied")).scalars().all()
    # one row per (actor, action, minute): two keys, each in one row (two if the minute turned meanwhile)
    totals: dict[tuple[str, str], int] = {}
    for row in rows:
        totals[(row.actor, row.action)] = totals.get((row.actor, row.action), 0) + row.count
        assert row.at.second == 0 and row.at.microsecond == 0
    assert totals == {("key:k-viewer", "device.revoke"): 7, ("anonymous", "auth.failed"): 6}
    assert 2 <= len(rows) <= 4, [(r.actor, r.action, r.count) for r in rows]
    assert {r.client_address for r in rows} == {"testclient"}


def test_existing_keys_become_admins(backend: str, databases: DatabaseFactory) -> None:
    url = databases.create(backend)
    migrate(url, "0003")
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO admin_keys (id, name, key_hash, created_at) "
                "VALUES ('key_old', 'old', :hash, CURRENT_TIMESTAMP)"
            ),
            {"hash": "0" * 64},
        )
    migrate(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role FROM admin_keys WHERE name = 'old'")).scalar_one() == "admin"
    engine.dispose()


#: the words of docs/api.md's role table that name each family of routes in ROLE_TABLE (by path prefix)
_DOC_WORDS = {
    "/v1/devices/{device_id:str}/labels": "labels",
    "/v1/devices/labels": "labels",
    "/v1/labels": "labels",
    "/v1/campaigns": "campaigns",
    "/v1/tokens": "tokens",
    "/v1/apk": "APK",
    "/v1/apps": "apps",
    "/v1/profiles": "profiles",
    "/v1/compliance": "compliance",
    "/v1/commands": "commands",
    "/v1/devices": "devices",
    "/v1/approvals": "approvals",
}


def test_the_role_table_in_the_docs_names_every_family_of_routes_of_its_role() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    rows = {role: next(line for line in doc.splitlines() if line.startswith(f"| `{role}` |")) for role in ROLES}
    assert not any("once they exist" in row for row in rows.values())
    for (method, path), role in ROLE_TABLE.items():
        word = next((w for prefix, w in _DOC_WORDS.items() if path.startswith(prefix)), None)
        if word is not None and role in ("viewer", "operator"):
            assert word in rows[role], (method, path, role, word)
