"""Profile rollouts over HTTP on both databases: `rollout` in `POST /v1/profiles`, the rollout as a campaign
of kind `profile` in `/v1/campaigns`, a device's status report deciding its target, and 422s that write
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.models import Campaign, ProfileVersion
from core.profiles.effective import refresh_stale
from tests.support.profiles import profile


def _pos(wifi: str) -> dict[str, Any]:
    return profile("pos", "store=42", settings={"wifi": wifi})


def test_a_rollout_through_the_api_is_a_profile_campaign(
    client: TestClient[Any], admin: dict[str, str], enroll: Any, auth: Any, session_factory: sessionmaker[Session]
) -> None:
    devices = {device_id: auth(enroll(device_id)) for device_id in ("dev_r1", "dev_r2")}
    for device_id in devices:
        client.patch(f"/v1/devices/{device_id}/labels", json={"set": {"store": "42"}}, headers=admin)
    with session_factory.begin() as db:
        refresh_stale(db, client.app.state.settings)
    assert client.post("/v1/profiles", json=_pos("a"), headers=admin).json()["rollout"] is None
    old = {d: client.post("/v1/heartbeat", json={}, headers=h).json()["profile"] for d, h in devices.items()}
    body = {**_pos("b"), "rollout": {"wave_size": 1, "max_noncompliant_pct": 5, "wave_interval_seconds": 60}}
    applied = client.post("/v1/profiles", json=body, headers=admin)
    assert applied.status_code == 200, applied.text
    rollout = applied.json()["rollout"]
    assert rollout["kind"] == "profile" and rollout["targeted"] == 2 and rollout["waves"]["count"] == 2
    assert rollout["profile"] == {"name": "pos", "from_version": 1, "to_version": 2, "grace_seconds": 900}
    assert rollout["waves"]["max_failure_pct"] == 5 and rollout["waves"]["interval_seconds"] == 60

    listed = client.get("/v1/campaigns", headers=admin).json()["items"]
    assert [(c["id"], c["kind"]) for c in listed] == [(rollout["id"], "profile")]
    shown = client.get(f"/v1/campaigns/{rollout['id']}", headers=admin).json()
    assert shown["kind"] == "profile" and shown["counts"]["queued"] == 2

    fleet.advance(session_factory, rollout["id"])
    now = {d: client.post("/v1/heartbeat", json={}, headers=h).json()["profile"] for d, h in devices.items()}
    moved = [d for d in devices if now[d] != old[d]]
    assert len(moved) == 1  # the first wave only
    report = {"effective_hash": now[moved[0]], "items": [{"key": "settings/wifi", "state": "compliant"}]}
    assert client.post("/v1/profile/status", json=report, headers=devices[moved[0]]).status_code == 200
    counts = client.get(f"/v1/campaigns/{rollout['id']}", headers=admin).json()["counts"]
    assert (counts["queued"], counts["pending"], counts["succeeded"]) == (1, 0, 1)
    drill = client.get(f"/v1/campaigns/{rollout['id']}/devices", params={"status": "succeeded"}, headers=admin)
    assert [row["device_id"] for row in drill.json()["items"]] == moved
    paused = client.post(f"/v1/campaigns/{rollout['id']}/pause", headers=admin)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"


BAD = [
    {},
    {"wave_size": 0},
    {"wave_percent": 0},
    {"wave_percent": 120},
    {"wave_size": 1, "wave_percent": 5},
    {"wave_size": 1, "colour": 1},
    {"wave_size": 1, "grace_seconds": 0},
    {"wave_size": 1, "wave_interval_seconds": -5},
    {"wave_size": 1, "max_noncompliant_pct": 101},
    "ten percent",
]


@pytest.mark.parametrize("rollout", BAD)
def test_bad_rollouts_are_422_and_write_nothing(
    rollout: Any, client: TestClient[Any], admin: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    refused = client.post("/v1/profiles", json={**_pos("a"), "rollout": rollout}, headers=admin)
    assert refused.status_code == 422, refused.text
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(ProfileVersion)) == 0
        assert db.scalar(select(func.count()).select_from(Campaign)) == 0
    planned = client.post("/v1/profiles/plan", json={**_pos("a"), "rollout": {"wave_size": 1}}, headers=admin)
    assert planned.status_code == 422  # a plan takes the document alone
