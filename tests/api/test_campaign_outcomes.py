"""Outcome-gated campaigns through the HTTP API on both databases: devices enroll and ack as agents do."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from core.base.versions import version_key
from core.models import Device


def _ack(client: TestClient[Any], token: str, request_id: str, status: str, detail: str | None = None) -> None:
    body = {"status": status} | ({"detail": detail} if detail else {})
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
        json={"action": "update_agent", "selector": "all", "success_when": "@agent_version>>2"},
        headers=headers,
    )
    assert (
        bad.status_code == 422
        and bad.json()["code"] == "invalid_selector"
        and bad.json()["errors"][0]["field"] == "success_when"
    )
    body = {"action": "update_agent", "selector": "all", "success_when": "@agent_version>=2.0"}
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
    assert page["items"][0]["detail"] == "INSUFFICIENT_STORAGE"
    refused = client.get(f"/v1/campaigns/{cid}/failures/devices?reason=a%20b", headers=admin)
    assert refused.status_code in (400, 422)
    missing = client.get("/v1/campaigns/cmp_00000000000000000000000000/failures", headers=admin)
    assert missing.status_code == 404
