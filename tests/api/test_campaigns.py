"""Campaigns, labels and selectors through the HTTP API on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from core.enrollment import tokens as credentials
from core.models import COMMAND_STATUSES
from tests.support.fleet import ack_all, seed_fleet, seed_many


def _post(client: TestClient[Any], admin: dict[str, str], body: Any, key: str | None = "camp-1") -> Any:
    headers = dict(admin) | ({"Idempotency-Key": key} if key else {})
    return client.post("/v1/campaigns", json=body, headers=headers)


def test_campaign_lifecycle_over_http(
    client, admin, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_factory.begin() as db:
        seed_many(db, 12, labels={"store": "42"})
    body = {"action": "sync", "selector": "store=42", "waves": {"size": 6, "interval_seconds": 3600}}
    first = _post(client, admin, body)
    assert first.status_code == 202, first.text
    campaign = first.json()
    assert campaign["id"].startswith("cmp_") and len(campaign["id"]) == 30
    assert campaign["counts"]["queued"] == 12 and campaign["waves"]["count"] == 2
    replay = _post(client, admin, body)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == campaign["id"]
    mismatch = _post(client, admin, body | {"action": "ping"})
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "idempotency_key_reused"

    fleet.run_due(session_factory, settings)
    shown = client.get(f"/v1/campaigns/{campaign['id']}", headers=admin).json()
    assert (shown["counts"]["pending"], shown["counts"]["queued"], shown["waves"]["released"]) == (6, 6, 1)
    ack_all(session_factory, campaign["id"], status="failed", limit=2)
    failed = client.get(f"/v1/campaigns/{campaign['id']}/devices?status=failed&limit=1", headers=admin).json()
    assert len(failed["items"]) == 1 and failed["items"][0]["status"] == "failed" and failed["next_cursor"]
    rest = client.get(
        f"/v1/campaigns/{campaign['id']}/devices?status=failed&cursor={failed['next_cursor']}", headers=admin
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None

    assert client.post(f"/v1/campaigns/{campaign['id']}/pause", headers=admin).json()["status"] == "paused"
    assert client.post(f"/v1/campaigns/{campaign['id']}/pause", headers=admin).status_code == 200
    assert client.post(f"/v1/campaigns/{campaign['id']}/resume", headers=admin).json()["status"] == "running"
    listing = client.get("/v1/campaigns", headers=admin).json()
    assert [c["id"] for c in listing["items"]] == [campaign["id"]]


@pytest.mark.skipif("cancelled" not in COMMAND_STATUSES, reason="needs the `cancelled` dispatch status (issue 11)")
def test_cancel_over_http_leaves_pending_lists_at_once(client, admin, enroll, session_factory, settings) -> None:
    tokens = {f"p{i}": enroll(f"p{i}") for i in range(4)}
    campaign = _post(
        client,
        admin,
        {"action": "ring", "payload": {"seconds": 5}, "selector": "all", "waves": {"size": 2, "interval_seconds": 600}},
    )
    campaign_id = campaign.json()["id"]
    fleet.run_due(session_factory, settings)
    pending = {
        d: client.get("/v1/commands/pending", headers={"Authorization": f"Bearer {t}"}).json()["items"]
        for d, t in tokens.items()
    }
    assert sum(len(items) for items in pending.values()) == 2
    cancelled = client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    counts = cancelled.json()["counts"]
    assert cancelled.json()["status"] == "cancelled" and (counts["cancelled"], counts["queued"]) == (4, 0)
    for token in tokens.values():
        assert client.get("/v1/commands/pending", headers={"Authorization": f"Bearer {token}"}).json()["items"] == []
    assert client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=admin).status_code == 200
    assert client.post(f"/v1/campaigns/{campaign_id}/resume", headers=admin).status_code == 409
    paused = client.post(f"/v1/campaigns/{campaign_id}/pause", headers=admin)
    assert paused.status_code == 409, paused.text  # as resume: cancel, pause, resume would run it again
    assert paused.json()["code"] == "conflict"
    assert client.get(f"/v1/campaigns/{campaign_id}", headers=admin).json()["status"] == "cancelled"


def test_bad_campaigns_are_precise_problems(client, admin, session_factory) -> None:
    with session_factory.begin() as db:
        seed_many(db, 2)
    cases = [
        ({"action": "sync", "selector": "store in 42"}, "invalid_selector", "position 9"),
        ({"action": "sync", "selector": ""}, "invalid_argument", "all"),
        ({"action": "sync"}, "invalid_argument", "exactly one"),
        ({"action": "sync", "selector": "store=nowhere"}, "invalid_argument", "no device matches"),
        ({"action": "sync", "selector": "all", "waves": {"percent": 0}}, "validation_failed", "percent"),
        ({"action": "sync", "selector": "all", "waves": {"interval_seconds": 60}}, "invalid_argument", "size or"),
        ({"action": "sync", "selector": "all", "colour": 1}, "validation_failed", "colour"),
    ]
    for body, code, text in cases:
        response = _post(client, admin, body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code and text in response.json()["detail"], response.json()
    assert client.get("/v1/campaigns", headers=admin).json()["items"] == []
    assert _post(client, admin, {"action": "sync", "selector": "all"}, key=None).status_code == 400
    assert client.get("/v1/campaigns/cmp_nope", headers=admin).status_code == 422
    assert client.get("/v1/campaigns/cmp_00000000000000000000000000", headers=admin).status_code == 404
    assert client.post("/v1/campaigns", json={"action": "sync", "selector": "all"}).status_code == 401


def test_control_characters_in_a_selector_are_422_everywhere(client, admin, session_factory) -> None:
    """Issue #21: a NUL inside a quoted value was a 500 on PostgreSQL; an ESC sequence was stored."""
    with session_factory.begin() as db:
        seed_many(db, 2)
    for selector in ('@model="a\x00b"', '@model="\x1b[2J"', "store=\u202e24", "all\x9b"):
        listed = client.get("/v1/devices", params={"selector": selector}, headers=admin)
        assert listed.status_code == 422, (selector, listed.text)
        campaign = _post(client, admin, {"action": "sync", "selector": selector})
        assert campaign.status_code == 422, (selector, campaign.text)
        bulk = client.post("/v1/devices/labels", json={"selector": selector, "set": {"a": "1"}}, headers=admin)
        assert bulk.status_code == 422, (selector, bulk.text)
        for answer in (listed, campaign, bulk):
            assert answer.json()["code"] in ("invalid_selector", "validation_failed"), answer.json()
    assert client.get("/v1/campaigns", headers=admin).json()["items"] == []


def test_labels_selectors_and_tokens_over_http(
    client, admin, session_factory: sessionmaker[Session], make_token
) -> None:
    seed_fleet(session_factory)
    listed = client.get("/v1/devices", params={"selector": "store=42,@state=online"}, headers=admin).json()
    assert [d["device_id"] for d in listed["items"]] == ["a1"] and listed["items"][0]["labels"]["ring"] == "canary"
    bad = client.get("/v1/devices", params={"selector": "store in"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_selector"

    patched = client.patch(
        "/v1/devices/a2/labels", json={"set": {"ring": "canary"}, "remove": ["store"]}, headers=admin
    )
    assert patched.status_code == 200 and patched.json()["labels"] == {"ring": "canary"}
    refused = client.patch("/v1/devices/a2/labels", json={"set": {"Bad Key": "x"}}, headers=admin)
    assert refused.status_code == 422
    bulk = client.post("/v1/devices/labels", json={"selector": "ring=canary", "set": {"wave": "1"}}, headers=admin)
    assert bulk.json()["matched"] == 2
    counts = {(c["key"], c["value"]): c["devices"] for c in client.get("/v1/labels", headers=admin).json()["items"]}
    assert counts[("wave", "1")] == 2 and counts[("store", "42")] == 1  # r1 is revoked: not counted

    with session_factory.begin() as db:
        secret, token = credentials.create_enrollment_token(db, uses=2, labels={"store": "99", "ring": "beta"})
    assert token["labels"] == {"store": "99", "ring": "beta"}
    enrolled = client.post("/v1/enroll", json={"device_id": "new-1"}, headers={"Authorization": f"Bearer {secret}"})
    assert enrolled.status_code == 201
    shown = client.get("/v1/devices/new-1", headers=admin).json()
    assert shown["labels"] == {"ring": "beta", "store": "99"}


def test_agent_version_selectors_follow_enrollment_and_heartbeats(client, admin, enroll) -> None:
    old = enroll("v-old", agent_version="1.9.2")
    enroll("v-new", agent_version="1.10.0")

    def below(version: str) -> list[str]:
        page = client.get("/v1/devices", params={"selector": f"@agent_version<{version}"}, headers=admin).json()
        return [d["device_id"] for d in page["items"]]

    assert below("1.10.0") == ["v-old"]
    beat = client.post("/v1/heartbeat", json={"agent_version": "2.0.0"}, headers={"Authorization": f"Bearer {old}"})
    assert beat.status_code == 201, beat.text
    assert below("1.10.0") == [] and below("2.0.1") == ["v-new", "v-old"]


def test_campaign_bodies_have_their_own_limit(client, admin, session_factory) -> None:
    with session_factory.begin() as db:
        seed_many(db, 3)
    ids = [f"d{i:06d}" for i in range(3)] + [f"unknown-device-{i:05d}" for i in range(9_997)]
    big = _post(client, admin, {"action": "sync", "device_ids": ids})  # ~250 KB: past the 64 KiB default
    assert big.status_code == 404 and "no device unknown-device-00000" in big.json()["detail"]
    too_many = _post(client, admin, {"action": "sync", "device_ids": [*ids, "one-more"]})
    assert too_many.status_code == 422
    huge = _post(client, admin, {"action": "sync", "selector": "all", "note": "x" * (2 * 1024 * 1024)})
    assert huge.status_code == 413
    explicit = _post(client, admin, {"action": "sync", "device_ids": ids[:3]}, key="explicit")
    assert explicit.status_code == 202 and explicit.json()["targeted"] == 3


def test_commands_list_by_campaign(client, admin, session_factory: sessionmaker[Session], settings: Settings) -> None:
    """`GET /v1/commands?campaign_id=` lists the campaign's released commands only (contract's filter list)."""
    with session_factory.begin() as db:
        seed_many(db, 3, labels={"store": "7"})
        seed_many(db, 2, prefix="other")
    campaign = _post(client, admin, {"action": "sync", "selector": "store=7"}).json()
    other = _post(client, admin, {"action": "ping", "selector": "all"}, key="camp-2").json()
    fleet.run_due(session_factory, settings)
    page = client.get("/v1/commands", params={"campaign_id": campaign["id"]}, headers=admin).json()
    assert len(page["items"]) == 3 and {c["request_id"].split(":")[0] for c in page["items"]} == {campaign["id"]}
    assert len(client.get("/v1/commands", params={"campaign_id": other["id"]}, headers=admin).json()["items"]) == 5
    bad = client.get("/v1/commands", params={"campaign_id": "not-a-campaign"}, headers=admin)
    assert bad.status_code == 422


def test_the_failed_drill_down_says_why_and_on_which_model(
    client, admin, enroll, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    tokens = {"f1": enroll("f1", model="Galaxy A10"), "f2": enroll("f2", model="Pixel 8"), "f3": enroll("f3")}
    campaign = _post(client, admin, {"action": "sync", "device_ids": sorted(tokens)}).json()
    fleet.run_due(session_factory, settings)
    for device_id, status, detail in (("f1", "failed", "INSUFFICIENT_STORAGE: 12 MB free"), ("f2", "completed", None)):
        ack = client.post(
            f"/v1/commands/{campaign['id']}:{device_id}/ack",
            json={"status": status} | ({"detail": detail} if detail else {}),
            headers={"Authorization": f"Bearer {tokens[device_id]}"},
        )
        assert ack.status_code == 200, ack.text
    failed = client.get(f"/v1/campaigns/{campaign['id']}/devices?status=failed", headers=admin).json()["items"]
    assert [(t["device_id"], t["model"], t["detail"]) for t in failed] == [
        ("f1", "Galaxy A10", "INSUFFICIENT_STORAGE: 12 MB free")
    ]
    every = client.get(f"/v1/campaigns/{campaign['id']}/devices", headers=admin).json()["items"]
    assert [(t["device_id"], t["model"], t["detail"]) for t in every] == [
        ("f1", "Galaxy A10", "INSUFFICIENT_STORAGE: 12 MB free"),
        ("f2", "Pixel 8", None),
        ("f3", None, None),
    ]
