"""Every admin route that changes state leaves exactly one audit row; GET /v1/audit pages and filters.

``MUTATIONS`` names a successful call for each state-changing admin route; a route that is registered
but missing from it fails ``test_every_state_changing_route_is_exercised``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.access import keys as admin_keys
from core.apk import builds as apk
from core.base.settings import Settings
from core.commands import dispatches
from core.enrollment import tokens as credentials
from core.events import webhooks
from core.models import AuditEvent
from nexmdm_api import create_app
from nexmdm_api.auditbuffer import AuditBuffer
from tests.support.approvals import ask_wipe, wipe_settings
from tests.support.audit import seed_out_of_id_order
from tests.support.fakes.apk import apk_bytes
from tests.support.profiles import apply as apply_profile
from tests.support.routes import admin_routes

APK = apk_bytes()

Call = Callable[[TestClient[Any], dict[str, str], Any], Any]


def _seed_command(factory: sessionmaker[Session], settings: Settings) -> None:
    with factory.begin() as db:
        dispatches.create_command(db, settings, request_id="cmd-a", device_id="dev_a", action="ping")


def _seed_token(factory: sessionmaker[Session]) -> str:
    with factory.begin() as db:
        return credentials.create_enrollment_token(db)[1]["id"]


def _seed_build(factory: sessionmaker[Session], settings: Settings) -> int:
    with factory.begin() as db:
        return apk.add_build(db, settings, source=io.BytesIO(APK), version_code=9, version_name="9")["id"]


def _seed_campaign(factory: sessionmaker[Session], settings: Settings, *, paused: bool = False) -> str:
    with factory.begin() as db:
        _, campaign = fleet.create_campaign(db, settings, idempotency_key="seed-1", action="ping", device_ids=["dev_a"])
        if paused:
            fleet.pause(db, campaign["id"])
    return str(campaign["id"])


def _seed_key(factory: sessionmaker[Session]) -> None:
    with factory.begin() as db:
        admin_keys.create_admin_key(db, name="victim", role="viewer")


def _seed_webhook(factory: sessionmaker[Session]) -> str:
    with factory.begin() as db:
        return webhooks.add_endpoint(db, url="https://hooks.example.com/x", events=["device.offline"])[1]["id"]


def _seed_delivery(factory: sessionmaker[Session]) -> int:
    endpoint_id = _seed_webhook(factory)
    with factory.begin() as db:
        webhooks.send_test(db, endpoint_id)
        return webhooks.list_deliveries(db, endpoint_id=endpoint_id)[0]["id"]


def _seed_approval(factory: sessionmaker[Session], settings: Settings) -> str:
    """A wipe asked for by another admin (``key:alice``) than the test's; its own audit row is dropped, as
    the other seeds write none."""
    approval_id = ask_wipe(factory, wipe_settings(settings), device_id="dev_a")
    with factory.begin() as db:
        db.execute(delete(AuditEvent).where(AuditEvent.target == approval_id))
    return approval_id


#: (method, path) -> (expected action, call(client, headers, context) -> response)
MUTATIONS: dict[tuple[str, str], tuple[str, Call]] = {
    ("POST", "/v1/devices/{device_id:str}/commands"): (
        "command.create",
        lambda c, h, x: c.post(
            "/v1/devices/dev_a/commands", json={"action": "ping"}, headers=h | {"Idempotency-Key": "k-1"}
        ),
    ),
    ("POST", "/v1/commands/{request_id:str}/cancel"): (
        "command.cancel",
        lambda c, h, x: (_seed_command(x.factory, x.settings), c.post("/v1/commands/cmd-a/cancel", headers=h))[1],
    ),
    ("POST", "/v1/devices/{device_id:str}/revoke"): (
        "device.revoke",
        lambda c, h, x: c.post("/v1/devices/dev_a/revoke", headers=h),
    ),
    ("POST", "/v1/apk/builds"): (
        "apk.upload",
        lambda c, h, x: c.post(
            "/v1/apk/builds",
            headers=h,
            files={"file": ("a.apk", io.BytesIO(APK))},
            data={"version_code": "7", "version_name": "7"},
        ),
    ),
    ("POST", "/v1/tokens"): ("token.create", lambda c, h, x: c.post("/v1/tokens", json={"uses": 2}, headers=h)),
    ("POST", "/v1/tokens/{token_id:str}/revoke"): (
        "token.revoke",
        lambda c, h, x: c.post(f"/v1/tokens/{_seed_token(x.factory)}/revoke", headers=h),
    ),
    ("POST", "/v1/keys"): (
        "key.create",
        lambda c, h, x: c.post("/v1/keys", json={"name": "ci", "role": "operator"}, headers=h),
    ),
    ("POST", "/v1/keys/{name:str}/revoke"): (
        "key.revoke",
        lambda c, h, x: (_seed_key(x.factory), c.post("/v1/keys/victim/revoke", headers=h))[1],
    ),
    ("POST", "/v1/webhooks"): (
        "webhook.create",
        lambda c, h, x: c.post(
            "/v1/webhooks", json={"url": "https://hooks.example.com/n", "events": ["device.online"]}, headers=h
        ),
    ),
    ("DELETE", "/v1/webhooks/{endpoint_id:str}"): (
        "webhook.remove",
        lambda c, h, x: c.delete(f"/v1/webhooks/{_seed_webhook(x.factory)}", headers=h),
    ),
    ("POST", "/v1/webhooks/{endpoint_id:str}/test"): (
        "webhook.test",
        lambda c, h, x: c.post(f"/v1/webhooks/{_seed_webhook(x.factory)}/test", headers=h),
    ),
    ("DELETE", "/v1/apk/builds/{build_id:int}"): (
        "apk.remove",
        lambda c, h, x: c.delete(f"/v1/apk/builds/{_seed_build(x.factory, x.settings)}", headers=h),
    ),
    ("PATCH", "/v1/devices/{device_id:str}/labels"): (
        "device.label",
        lambda c, h, x: c.patch("/v1/devices/dev_a/labels", json={"set": {"store": "42"}, "remove": []}, headers=h),
    ),
    ("POST", "/v1/devices/labels"): (
        "device.label",
        lambda c, h, x: c.post("/v1/devices/labels", json={"selector": "!ring", "set": {"ring": "canary"}}, headers=h),
    ),
    ("POST", "/v1/campaigns"): (
        "campaign.create",
        lambda c, h, x: c.post(
            "/v1/campaigns", json={"action": "ping", "device_ids": ["dev_a"]}, headers=h | {"Idempotency-Key": "c-1"}
        ),
    ),
    ("POST", "/v1/campaigns/{campaign_id:str}/pause"): (
        "campaign.pause",
        lambda c, h, x: c.post(f"/v1/campaigns/{_seed_campaign(x.factory, x.settings)}/pause", headers=h),
    ),
    ("POST", "/v1/campaigns/{campaign_id:str}/resume"): (
        "campaign.resume",
        lambda c, h, x: c.post(f"/v1/campaigns/{_seed_campaign(x.factory, x.settings, paused=True)}/resume", headers=h),
    ),
    ("POST", "/v1/campaigns/{campaign_id:str}/cancel"): (
        "campaign.cancel",
        lambda c, h, x: c.post(f"/v1/campaigns/{_seed_campaign(x.factory, x.settings)}/cancel", headers=h),
    ),
    ("POST", "/v1/approvals/{approval_id:str}/approve"): (
        "approval.approve",
        lambda c, h, x: c.post(f"/v1/approvals/{_seed_approval(x.factory, x.settings)}/approve", headers=h),
    ),
    ("POST", "/v1/approvals/{approval_id:str}/deny"): (
        "approval.deny",
        lambda c, h, x: c.post(f"/v1/approvals/{_seed_approval(x.factory, x.settings)}/deny", headers=h),
    ),
    ("POST", "/v1/approvals/{approval_id:str}/cancel"): (
        "approval.cancel",
        lambda c, h, x: c.post(f"/v1/approvals/{_seed_approval(x.factory, x.settings)}/cancel", headers=h),
    ),
    ("POST", "/v1/profiles"): (
        "profile.apply",
        lambda c, h, x: c.post("/v1/profiles", json={"name": "pos", "settings": {"wifi": "corp"}}, headers=h),
    ),
    ("POST", "/v1/profiles/{name:str}/rollback"): (
        "profile.rollback",
        lambda c, h, x: c.post(f"/v1/profiles/{_seed_profile(x)}/rollback", json={"to_version": 1}, headers=h),
    ),
    ("DELETE", "/v1/profiles/{name:str}"): (
        "profile.delete",
        lambda c, h, x: c.delete(f"/v1/profiles/{_seed_profile(x)}", headers=h),
    ),
    ("POST", "/v1/webhooks/deliveries/{delivery_id:int}/redeliver"): (
        "webhook.redeliver",
        lambda c, h, x: c.post(f"/v1/webhooks/deliveries/{_seed_delivery(x.factory)}/redeliver", headers=h),
    ),
}


def _seed_profile(x: Context) -> str:
    for wifi in ("a", "b"):  # two versions: a rollback to the first changes something
        apply_profile(x.factory, x.settings, {"name": "pos", "settings": {"wifi": wifi}})
    with x.factory.begin() as db:  # a seed leaves no audit row of its own, as the other seeds
        db.execute(delete(AuditEvent).where(AuditEvent.action == "profile.apply"))
    return "pos"


class Context:
    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings


def test_every_state_changing_route_is_exercised(settings: Settings) -> None:
    # a POST that writes nothing (a profile's plan) is read-only, as its route says
    routes = admin_routes(create_app(settings))
    changing = {key for key, handler in routes.items() if key[0] != "GET" and not handler.opt.get("readonly")}
    assert changing - set(MUTATIONS) == set(), "state-changing admin routes missing from MUTATIONS"
    assert set(MUTATIONS) - changing == set()


@pytest.mark.parametrize("route", sorted(MUTATIONS), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_change_leaves_one_audit_row(
    route: tuple[str, str], client: TestClient[Any], admin: dict[str, str], enroll, session_factory, api_settings
) -> None:
    enroll("dev_a")
    action, call = MUTATIONS[route]
    with session_factory() as db:
        before = db.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0
    response = call(client, admin, Context(session_factory, api_settings))
    assert 200 <= response.status_code < 300, response.text
    with session_factory() as db:
        new = list(db.execute(select(AuditEvent).where(AuditEvent.id > before)).scalars())
    assert [(row.action, row.actor, row.outcome) for row in new] == [(action, "key:ops", "success")]
    assert new[0].client_address == "testclient"


def test_a_refused_change_leaves_no_audit_row(client, admin, session_factory) -> None:
    assert client.post("/v1/devices/nobody/revoke", headers=admin).status_code == 404
    assert client.post("/v1/keys", json={"name": "bad name!"}, headers=admin).status_code == 422
    with session_factory() as db:
        assert db.execute(select(AuditEvent)).first() is None


def test_get_audit_pages_and_filters(client, admin, enroll) -> None:
    for i in range(3):
        enroll(f"dev_{i}")
        assert client.post(f"/v1/devices/dev_{i}/revoke", headers=admin).status_code == 200
    assert client.post("/v1/tokens", json={}, headers=admin).status_code == 201
    first = client.get("/v1/audit", params={"limit": 2}, headers=admin).json()
    assert [e["action"] for e in first["items"]] == ["token.create", "device.revoke"]
    rest = client.get("/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin).json()
    assert [e["target"] for e in rest["items"]] == ["dev_1", "dev_0"] and rest["next_cursor"] is None
    only = client.get("/v1/audit", params={"action": "device.*", "actor": "key:ops"}, headers=admin).json()
    assert len(only["items"]) == 3
    since = client.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=admin).json()
    assert since["items"] == []
    naive = client.get("/v1/audit", params={"since": "2020-01-01T00:00:00"}, headers=admin)
    assert naive.status_code == 422
    assert client.get("/v1/audit", params={"bogus": "1"}, headers=admin).status_code == 422


def test_a_refusal_row_the_database_refuses_never_blocks_the_others(session_factory, engine) -> None:
    """A 70-character forwarded "address" (PostgreSQL: StringDataRightTruncation) failed every flush of the
    refusal buffer, which kept the batch and retried it forever: no later refusal was written. Text the
    driver cannot send (a lone surrogate) fails on both databases."""
    buffer = AuditBuffer()
    good = [("anonymous", "auth.failed", "203.0.113.7"), ("key:viewer", "device.revoke", "198.51.100.1")]
    bad = [("anonymous", "auth.failed", "x" * 70), ("key:\udcff", "device.revoke", "192.0.2.1")]
    for actor, action, address in good + bad + good:
        buffer.add(actor, action, address)
    assert buffer.flush(session_factory) == 6  # every refusal written: the bad rows under their action's "*"
    assert buffer.pending() == 0  # nothing kept to fail again at the next round
    buffer.add("anonymous", "auth.failed", "203.0.113.9")
    assert buffer.flush(session_factory) == 1
    with session_factory() as db:
        found = {(r.actor, r.action, r.client_address): r.count for r in db.execute(select(AuditEvent)).scalars()}
    assert found[("anonymous", "auth.failed", "203.0.113.7")] == 2
    assert found[("key:viewer", "device.revoke", "198.51.100.1")] == 2
    assert found[("anonymous", "auth.failed", "203.0.113.9")] == 1
    assert found[("*", "device.revoke", "*")] == 1  # the unsendable actor, counted under its action
    assert sum(found.values()) == 7


def test_get_audit_is_in_time_order_and_its_cursor_pages_by_time_and_id(
    client, admin, session_factory: sessionmaker[Session]
) -> None:
    expected = seed_out_of_id_order(session_factory)
    targets, cursor, pages = [], None, 0
    while True:
        page = client.get("/v1/audit", params={"limit": 1} | ({"cursor": cursor} if cursor else {}), headers=admin)
        assert page.status_code == 200, page.text
        body = page.json()
        targets += [e["target"] for e in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert targets == expected and pages == len(expected)
    whole = client.get("/v1/audit", headers=admin).json()["items"]
    b = next(e for e in whole if e["target"] == "b")
    legacy = client.get("/v1/audit", params={"cursor": str(b["id"])}, headers=admin).json()  # a bare id still works
    assert [e["target"] for e in legacy["items"]] == ["a", None]
    assert client.get("/v1/audit", params={"cursor": "12-x"}, headers=admin).status_code in (400, 422)
