"""POST /v1/heartbeat: created vs dedup, the summary, cross-device refusal, body errors, flood limit."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.models import Device, DeviceHeartbeat
from nexmdm_api import create_app

BEAT = {"status": "ok", "battery_pct": 80, "plugged": True, "network_type": "wifi", "agent_version": "1.2.0"}


def beats(session_factory: sessionmaker[Session], device_id: str | None = None) -> int:
    with session_factory() as db:
        query = select(func.count()).select_from(DeviceHeartbeat)
        if device_id:
            query = query.where(DeviceHeartbeat.device_id == device_id)
        return db.execute(query).scalar_one()


def test_first_beat_is_created_then_deduplicated(client: TestClient[Any], enroll, auth, session_factory) -> None:
    token = enroll("dev_001")
    first = client.post("/v1/heartbeat", json=BEAT, headers=auth(token))
    assert first.status_code == 201
    assert first.json()["created"] is True
    second = client.post("/v1/heartbeat", json=BEAT | {"battery_pct": 79}, headers=auth(token))
    opened = first
    if second.status_code == 201:  # crossed a bucket boundary between the two calls: try once more
        opened = second
        second = client.post("/v1/heartbeat", json=BEAT, headers=auth(token))
    assert second.status_code == 200
    assert second.json()["created"] is False
    assert second.json()["bucket_start"] == opened.json()["bucket_start"]
    with session_factory() as db:
        device = db.get(Device, "dev_001")
        assert device is not None
        assert device.last_seen_at is not None
        assert device.last_battery_pct in (80, 79)
        assert device.last_network_type == "wifi"


def test_unknown_fields_are_ignored_and_fcm_token_updates(client, enroll, auth, session_factory) -> None:
    token = enroll("dev_001")
    response = client.post(
        "/v1/heartbeat", json=BEAT | {"future_field": {"x": 1}, "fcm_token": "fcm-new"}, headers=auth(token)
    )
    assert response.status_code == 201
    with session_factory() as db:
        assert db.get(Device, "dev_001").fcm_token == "fcm-new"


def test_own_device_id_is_accepted_and_another_is_403_writing_nothing(client, enroll, auth, session_factory) -> None:
    mine = enroll("dev_001")
    enroll("dev_002")
    assert client.post("/v1/heartbeat", json=BEAT | {"device_id": "dev_001"}, headers=auth(mine)).status_code == 201
    before = beats(session_factory)
    response = client.post("/v1/heartbeat", json=BEAT | {"device_id": "dev_002"}, headers=auth(mine))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert beats(session_factory) == before
    assert beats(session_factory, "dev_002") == 0


def test_credentials_are_required(client, enroll, auth, admin_key) -> None:
    enroll("dev_001")
    assert client.post("/v1/heartbeat", json=BEAT).status_code == 401
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth("nxd_" + "x" * 43)).status_code == 401
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(admin_key)).status_code == 401
    response = client.post("/v1/heartbeat", json=BEAT, headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "nxd_" not in response.text


def test_body_errors(client: TestClient[Any], enroll, auth) -> None:
    headers = auth(enroll("dev_001"))
    malformed = client.post(
        "/v1/heartbeat", content=b'{"status": ', headers=headers | {"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"
    empty = client.post("/v1/heartbeat", content=b"", headers=headers | {"content-type": "application/json"})
    assert empty.status_code == 400
    form = client.post("/v1/heartbeat", content=b"status=ok", headers=headers | {"content-type": "text/plain"})
    assert form.status_code == 415
    big = client.post("/v1/heartbeat", json={"pad": "x" * 70_000}, headers=headers)
    assert big.status_code == 413
    for bad in (
        {"battery_pct": 101},
        {"battery_pct": -1},
        {"network_type": "5g"},
        {"status": "OK!"},
        [],
        "x",
        {"agent_version": "a" * 65},
        {"plugged": "maybe"},
    ):
        response = client.post("/v1/heartbeat", json=bad, headers=headers)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 422


def test_control_characters_are_422(client, enroll, auth) -> None:
    response = client.post("/v1/heartbeat", json={"agent_version": "1.0\x00"}, headers=auth(enroll("dev_001")))
    assert response.status_code == 422


def test_revoked_device_token_stops_working(client, enroll, auth, session_factory) -> None:
    token = enroll("dev_001")
    with session_factory.begin() as db:
        from core.enrollment.enroll import revoke_device

        revoke_device(db, "dev_001")
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(token)).status_code == 401


def test_heartbeat_flood_is_limited_per_device(api_settings: Settings, engine, make_token, auth) -> None:
    settings = api_settings.with_overrides(heartbeat_rate_per_minute=6, heartbeat_burst=3)
    with TestClient(create_app(settings)) as client:
        token = make_token()
        tokens = [
            client.post("/v1/enroll", json={"device_id": d}, headers=auth(token)).json()["device_token"]
            for d in ("dev_a", "dev_b")
        ]
        codes = [client.post("/v1/heartbeat", json=BEAT, headers=auth(tokens[0])).status_code for _ in range(5)]
        # exactly the configured burst of 3 passes (the first opens a bucket, the next two fall in it)
        assert codes == [201, 200, 200, 429, 429], codes
        limited = client.post("/v1/heartbeat", json=BEAT, headers=auth(tokens[0]))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # another device behind the same address is not affected
        assert client.post("/v1/heartbeat", json=BEAT, headers=auth(tokens[1])).status_code in (200, 201)


def test_missing_credentials_come_before_body_errors(client: TestClient[Any]) -> None:
    for content, media_type in (
        (b"{not json", "application/json"),
        (b"x", "text/plain"),
        (b'{"battery_pct": 900}', "application/json"),
    ):
        response = client.post("/v1/heartbeat", content=content, headers={"content-type": media_type})
        assert response.status_code == 401, response.text
