"""Admin fleet view: devices and heartbeats with keyset paging."""

from __future__ import annotations

from datetime import timedelta

import pytest
from litestar.testing import TestClient

from core.heartbeats import store as core_heartbeats
from core.models import Device
from core.storage.types import utcnow
from nexmdm_api import create_app
from tests.support.api import bearer
from tests.support.fleet import SCANNING, seed_pixels


def test_devices_paging_and_show(client, admin, enroll) -> None:
    for index in range(5):
        enroll(f"dev_{index}")
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/devices", params=params, headers=admin)
        assert page.status_code == 200
        seen += [d["device_id"] for d in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"dev_{i}" for i in range(5)]
    one = client.get("/v1/devices/dev_3", headers=admin)
    assert one.status_code == 200 and one.json()["state"] == "offline"
    assert client.get("/v1/devices/nobody", headers=admin).status_code == 404
    assert client.get("/v1/devices/bad%20id", headers=admin).status_code == 422
    assert client.get("/v1/devices", params={"limit": 0}, headers=admin).status_code == 422
    assert client.get("/v1/devices", params={"limit": 501}, headers=admin).status_code == 422
    assert client.get("/v1/devices", params={"cursor": "%%%"}, headers=admin).status_code == 422
    assert client.get("/v1/devices").status_code == 401


def test_heartbeat_history_paging(client, admin, enroll, session_factory) -> None:
    enroll("dev_001")
    now = utcnow()
    with session_factory.begin() as db:
        device = db.get(Device, "dev_001")
        for minutes in range(5):
            core_heartbeats.record_device_heartbeat(
                db,
                device,
                {"status": "ok", "battery_pct": 50 + minutes},
                client.app.state.settings,
                received_at=now - timedelta(minutes=minutes),
            )
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/devices/dev_001/heartbeats", params=params, headers=admin)
        assert page.status_code == 200, page.text
        seen += [b["battery_pct"] for b in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [50, 51, 52, 53, 54]
    assert client.get("/v1/devices/nobody/heartbeats", headers=admin).status_code == 404
    assert client.get("/v1/devices/dev_001/heartbeats", params={"cursor": "bm9wZQ"}, headers=admin).status_code == 422


def test_admin_endpoints_refuse_query_parameters_they_do_not_declare(client, admin, enroll) -> None:
    enroll("dev_001")
    assert client.get("/v1/devices", params={"limit": 5, "offline": "true"}, headers=admin).status_code == 200
    for name in ("nope", "db", "request", "data", "device_id"):  # handler arguments that are not query parameters
        response = client.get("/v1/devices", params={name: "1"}, headers=admin)
        assert response.status_code == 422, name
        assert response.json()["errors"][0]["field"] == name
    assert client.get("/v1/devices/dev_001", params={"device_id": "x"}, headers=admin).status_code == 422


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_selector_past_its_time_limit_is_a_422(api_settings, engine, admin_key) -> None:
    """PostgreSQL cancels the scan (``@model`` has no index) at 1 ms: a precise 422, never a 500 or a 503."""
    pixels = seed_pixels(engine)
    with TestClient(create_app(api_settings.with_overrides(selector_statement_timeout_ms=1))) as tight:
        answer = tight.get("/v1/devices", params={"selector": SCANNING}, headers=bearer(admin_key))
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == "selector_too_slow" and problem["errors"][0]["field"] == "selector"
        assert "ran past its 1 ms time limit" in problem["detail"] and "narrow it" in problem["detail"]
        # only reads by selector are limited; the next request gets a clean transaction
        listed = tight.get("/v1/devices", params={"limit": 3}, headers=bearer(admin_key))
        assert listed.status_code == 200 and len(listed.json()["items"]) == 3
    with TestClient(create_app(api_settings)) as client:
        found = client.get("/v1/devices", params={"selector": SCANNING}, headers=bearer(admin_key))
        assert [d["device_id"] for d in found.json()["items"]] == pixels
