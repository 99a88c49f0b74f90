"""Approvals over HTTP: who may ask, who may decide, refusals answered with a problem and audited."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.models import AuditEvent, Campaign
from tests.support.approvals import audit_rows, dispatch_count, wipe_settings
from tests.support.databases import add_device

WIPE = {"action": "wipe", "payload": {"reason": "stolen"}}


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return wipe_settings(settings)


@pytest.fixture
def keys(session_factory: sessionmaker[Session]) -> dict[str, dict[str, str]]:
    made = {}
    with session_factory.begin() as db:
        for name, role in (("alice", "admin"), ("bob", "admin"), ("olga", "operator")):
            secret, _ = admin_keys.create_admin_key(db, name=name, role=role)
            made[name] = {"Authorization": f"Bearer {secret}"}
    return made


def _ask(client: TestClient[Any], headers: dict[str, str], key: str = "wipe-1") -> Any:
    return client.post("/v1/devices/dev_001/commands", json=WIPE, headers=headers | {"Idempotency-Key": key})


def test_a_wipe_is_an_approval_that_another_admin_decides(
    client: TestClient[Any], keys: dict[str, dict[str, str]], session_factory: sessionmaker[Session]
) -> None:
    add_device(session_factory, "dev_001")
    refused = _ask(client, keys["olga"])
    assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_role")
    asked = _ask(client, keys["alice"])
    assert asked.status_code == 202, asked.text
    approval = asked.json()
    assert approval["state"] == "awaiting_approval" and approval["requested_by"] == "key:alice"
    assert asked.headers["location"] == f"/v1/approvals/{approval['id']}"
    again = _ask(client, keys["alice"])
    assert (again.status_code, again.json()["id"], again.headers["idempotent-replayed"]) == (
        200,
        approval["id"],
        "true",
    )
    assert client.get("/v1/commands/wipe-1", headers=keys["olga"]).status_code == 404  # no command yet
    path = f"/v1/approvals/{approval['id']}"

    own = client.post(f"{path}/approve", headers=keys["alice"])
    assert (own.status_code, own.json()["code"]) == (403, "self_approval_refused")
    by_operator = client.post(f"{path}/approve", headers=keys["olga"])
    assert (by_operator.status_code, by_operator.json()["code"]) == (403, "insufficient_role")
    approved = client.post(f"{path}/approve", headers=keys["bob"])
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved" and approved.json()["decided_by"] == "key:bob"
    twice = client.post(f"{path}/approve", headers=keys["bob"])
    assert (twice.status_code, twice.json()["code"]) == (409, "approval_closed")
    cancelled = client.post(f"{path}/cancel", headers=keys["olga"])
    assert cancelled.status_code == 200 and cancelled.json()["ended_by"] == "key:olga"
    late = client.post(f"{path}/deny", headers=keys["bob"])
    assert (late.status_code, late.json()["code"]) == (409, "approval_closed")

    assert client.get(path, headers=keys["olga"]).json()["state"] == "cancelled"
    listed = client.get("/v1/approvals", params={"state": "cancelled"}, headers=keys["olga"]).json()
    assert [a["id"] for a in listed["items"]] == [approval["id"]] and listed["next_cursor"] is None
    assert client.get("/v1/approvals", params={"state": "approved"}, headers=keys["olga"]).json()["items"] == []
    assert dispatch_count(session_factory) == 0
    # refused decisions committed their audit rows although the requests failed
    assert audit_rows(session_factory, approval["id"]) == [
        ("approval.request", "key:alice", "success"),
        ("approval.approve", "key:alice", "denied"),
        ("approval.approve", "key:bob", "success"),
        ("approval.approve", "key:bob", "denied"),
        ("approval.cancel", "key:olga", "success"),
        ("approval.deny", "key:bob", "denied"),
    ]


def test_a_wipe_campaign_waits_for_its_approval(
    client: TestClient[Any], keys: dict[str, dict[str, str]], session_factory: sessionmaker[Session]
) -> None:
    add_device(session_factory, "dev_001")
    add_device(session_factory, "dev_002")
    body = {**WIPE, "selector": "all"}
    refused = client.post("/v1/campaigns", json=body, headers=keys["olga"] | {"Idempotency-Key": "c1"})
    assert refused.status_code == 403
    made = client.post("/v1/campaigns", json=body, headers=keys["alice"] | {"Idempotency-Key": "c1"})
    assert made.status_code == 202, made.text
    approval = made.json()
    assert approval["kind"] == "campaign"
    campaign = client.get(f"/v1/campaigns/{approval['target_id']}", headers=keys["olga"]).json()
    assert campaign["status"] == "awaiting_approval" and campaign["targeted"] == 2
    paused = client.post(f"/v1/campaigns/{approval['target_id']}/pause", headers=keys["olga"])
    assert paused.status_code == 409
    denied = client.post(f"/v1/approvals/{approval['id']}/deny", headers=keys["bob"])
    assert denied.status_code == 200
    with session_factory() as db:
        row = db.execute(select(Campaign).where(Campaign.id == approval["target_id"])).scalar_one()
        assert (row.status, row.reason) == ("cancelled", "approval_denied")
    assert dispatch_count(session_factory) == 0


def test_malformed_and_unknown_ids_are_precise(client: TestClient[Any], keys: dict[str, dict[str, str]]) -> None:
    bad = client.get("/v1/approvals/nope", headers=keys["bob"])
    assert bad.status_code == 422
    unknown = client.post("/v1/approvals/apr_00000000000000000000000000/approve", headers=keys["bob"])
    assert unknown.status_code == 404
    wrong_state = client.get("/v1/approvals", params={"state": "maybe"}, headers=keys["bob"])
    assert wrong_state.status_code in (400, 422)


def test_an_operator_approval_attempt_is_counted_in_the_audit_trail(
    client: TestClient[Any], keys: dict[str, dict[str, str]], session_factory: sessionmaker[Session]
) -> None:
    response = client.post("/v1/approvals/apr_00000000000000000000000000/approve", headers=keys["olga"])
    assert response.status_code == 403
    client.app.state.audit_buffer.flush(session_factory)
    with session_factory() as db:
        rows = db.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.outcome).where(AuditEvent.outcome == "denied")
        ).all()
    assert ("key:olga", "approval.approve", "denied") in [tuple(r) for r in rows]
