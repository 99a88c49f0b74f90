"""Outcome-gated campaigns through the HTTP API on both databases: devices enroll and ack as agents do."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from core.base.versions import version_key
from core.campaigns import outcomes
from core.models import Device
from core.storage.types import utcnow
from tests.support.inventory import DEVICE, app, body


@pytest.fixture(autouse=True)
def sweep_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round sweeps (a server sweeps at most every ``SWEEP_EVERY_SECONDS``; one test keeps that)."""
    monkeypatch.setattr(outcomes, "SWEEP_EVERY_SECONDS", 0)


#: the APK build an install_apk or update_agent names (its schema's one field)
BUILD = {"build_id": 1}


def _ack(client: TestClient[Any], token: str, request_id: str, status: str, code: str | None = None) -> None:
    body = {"status": status} | ({"error_code": code, "detail": "simulated"} if code else {})
    answer = client.post(f"/v1/commands/{request_id}/ack", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text


def test_outcome_gated_campaign_over_http(
    client, admin, enroll, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    models = {"g1": "Galaxy A10", "g2": "Galaxy A10", "p1": "Pixel 8", "p2": "Pixel 8", "p3": "Pixel 8"}
    tokens = {d: enroll(d, model=m, os_version="11", agent_version="1.0") for d, m in models.items()}
    with session_factory.begin() as db:  # p3 already runs the new agent
        db.execute(
            update(Device).where(Device.id == "p3").values(agent_version="2.0", agent_version_key=version_key("2.0"))
        )
    headers = admin | {"Idempotency-Key": "until-1"}
    bad = client.post(
        "/v1/campaigns",
        json={"action": "update_agent", "payload": BUILD, "selector": "all", "success_when": "@agent_version>>2"},
        headers=headers,
    )
    assert (
        bad.status_code == 422
        and bad.json()["code"] == "invalid_selector"
        and bad.json()["errors"][0]["field"] == "success_when"
    )
    body = {"action": "update_agent", "payload": BUILD, "selector": "all", "success_when": "@agent_version>=2.0"}
    created = client.post("/v1/campaigns", json=body | {"outcome_timeout_seconds": 600}, headers=headers)
    assert created.status_code == 202, created.text
    campaign = created.json()
    assert campaign["success_when"] == "@agent_version>=2.0" and campaign["outcome_timeout_seconds"] == 600
    assert campaign["counts"]["skipped"] == 1 and campaign["counts"]["queued"] == 4
    fleet.run_due(session_factory, settings)
    cid = campaign["id"]
    for device_id in ("g1", "g2"):
        _ack(client, tokens[device_id], f"{cid}:{device_id}", "failed", "INSUFFICIENT_STORAGE")
    for device_id in ("p1", "p2"):
        _ack(client, tokens[device_id], f"{cid}:{device_id}", "completed")
    with session_factory.begin() as db:
        db.execute(
            update(Device).where(Device.id == "p1").values(agent_version="2.0", agent_version_key=version_key("2.0"))
        )
    fleet.run_due(session_factory, settings)
    counts = client.get(f"/v1/campaigns/{cid}", headers=admin).json()["counts"]
    assert (counts["skipped"], counts["succeeded"], counts["acked"], counts["failed"]) == (1, 1, 1, 2)
    succeeded = client.get(f"/v1/campaigns/{cid}/devices?status=succeeded", headers=admin).json()["items"]
    assert [(d["device_id"], d["status"]) for d in succeeded] == [("p1", "succeeded")]

    report = client.get(f"/v1/campaigns/{cid}/failures", headers=admin).json()
    assert report["failed"] == 2
    assert report["groups"] == [
        {
            "reason": "INSUFFICIENT_STORAGE",
            "model": "Galaxy A10",
            "os_version": "11",
            "count": 2,
            "sample_device_ids": ["g1", "g2"],
        }
    ]
    page = client.get(f"/v1/campaigns/{cid}/failures/devices?reason=INSUFFICIENT_STORAGE&limit=1", headers=admin).json()
    assert [d["device_id"] for d in page["items"]] == ["g1"] and page["next_cursor"] == "g1"
    assert page["items"][0]["error_code"] == "INSUFFICIENT_STORAGE" and page["items"][0]["detail"] == "simulated"
    refused = client.get(f"/v1/campaigns/{cid}/failures/devices?reason=a%20b", headers=admin)
    assert refused.status_code in (400, 422)
    missing = client.get("/v1/campaigns/cmp_00000000000000000000000000/failures", headers=admin)
    assert missing.status_code == 404


def test_an_install_judged_by_the_reported_inventory(
    client, admin, enroll, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """The contract's example: install_apk until @app(com.acme.pos)>=4200; the inventory decides."""
    tokens = {d: enroll(d, model="enrolled-as") for d in ("s1", "s2", "s3")}

    def report(device_id: str, code: int, model: str = "Galaxy A10") -> None:
        document = body(DEVICE | {"model": model}, [app("com.acme.pos", code)])
        auth = {"Authorization": f"Bearer {tokens[device_id]}"}
        assert client.put("/v1/inventory", json=document, headers=auth).status_code in (200, 201)

    report("s1", 4200)  # already there: skipped
    report("s2", 4100)
    report("s3", 4100, model="Pixel 8")
    headers = admin | {"Idempotency-Key": "pos-4200"}
    until = {"success_when": "@app(com.acme.pos)>=4200", "outcome_timeout_seconds": 60}
    campaign = client.post(
        "/v1/campaigns", json={"action": "install_apk", "payload": BUILD, "selector": "all"} | until, headers=headers
    ).json()
    assert campaign["counts"]["skipped"] == 1 and campaign["counts"]["queued"] == 2
    fleet.run_due(session_factory, settings)
    for device_id in ("s2", "s3"):
        _ack(client, tokens[device_id], f"{campaign['id']}:{device_id}", "completed")
    report("s2", 4200)  # s2 installed it; s3 acked but still runs 4100
    # the report itself decides s2's target (no maintenance round in between)
    counts = client.get(f"/v1/campaigns/{campaign['id']}", headers=admin).json()["counts"]
    assert (counts["succeeded"], counts["acked"]) == (1, 1)
    fleet.run_due(session_factory, settings)
    counts = client.get(f"/v1/campaigns/{campaign['id']}", headers=admin).json()["counts"]
    assert (counts["succeeded"], counts["acked"]) == (1, 1)
    fleet.run_due(session_factory, settings, utcnow() + timedelta(seconds=61))
    report_ = client.get(f"/v1/campaigns/{campaign['id']}/failures", headers=admin).json()
    assert [(g["reason"], g["model"], g["os_version"], g["count"]) for g in report_["groups"]] == [
        ("outcome_timeout", "Pixel 8", "11", 1)  # the inventory's model, not the enrollment's
    ]
