"""No input makes the server answer 500: random bodies, paths, headers and ranges."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fakes.apk import apk_bytes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "device_id": JSON | st.text(max_size=140),
        "status": JSON,
        "battery_pct": JSON,
        "plugged": JSON,
        "network_type": JSON,
        "agent_version": JSON,
        "fcm_token": JSON,
        "action": JSON,
        "payload": JSON,
        "detail": JSON,
    },
)
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def device_headers(client, enroll) -> dict[str, str]:
    return {"Authorization": f"Bearer {enroll('dev_001')}"}


def test_random_bodies(client, device_headers, admin, make_token) -> None:
    token = make_token(uses=1000)

    @SLOW
    @given(body=FIELDS | JSON, key=st.text(max_size=300), path_id=st.text(min_size=1, max_size=40))
    def check(body: Any, key: str, path_id: str) -> None:
        raw = json.dumps(body)
        safe_id = "".join(c for c in path_id if c.isprintable() and c not in "/?#%") or "x"
        calls = [
            ("POST", "/v1/heartbeat", device_headers),
            ("POST", "/v1/enroll", {"Authorization": f"Bearer {token}"}),
            ("POST", f"/v1/commands/{safe_id}/ack", device_headers),
            (
                "POST",
                f"/v1/devices/{safe_id}/commands",
                admin | {"Idempotency-Key": key.encode("ascii", "ignore").decode()},
            ),
        ]
        for method, path, headers in calls:
            response = client.request(method, path, content=raw, headers=headers | {"content-type": "application/json"})
            assert response.status_code < 500, (path, raw, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json"

    check()


def test_odd_headers(client, device_headers, admin) -> None:
    for authorization in ("Bearer", "Bearer ", ("bearer nxd_" + "é" * 3).encode(), "Token abc", "Bearer " + "x" * 5000):
        assert client.post("/v1/heartbeat", json={}, headers={"Authorization": authorization}).status_code == 401
    # with a build uploaded, so that every Range header reaches the parser (no 404 before it)
    upload = client.post(
        "/v1/apk/builds",
        files={"file": ("a.apk", io.BytesIO(apk_bytes(b"x" * 100)))},
        data={"version_code": "7", "version_name": "7.0"},
        headers=admin,
    )
    assert upload.status_code == 201, upload.text
    odd = ("bytes=", "bytes=abc", "bytes=5-1", "bytes=0-1,5-9", "items=0-10", "bytes=-0", "bytes=999-", "bytes=0-" * 50)
    for value in odd:
        response = client.get("/v1/apk/download/latest", headers=admin | {"Range": value})
        assert response.status_code in (200, 416), (value, response.status_code)
        if response.status_code == 416:
            assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/apk/download/latest", headers=admin | {"Range": "bytes=0-1"}).status_code == 206
    response = client.post(
        "/v1/heartbeat",
        content=b"{}",
        headers=device_headers | {"content-type": "application/json", "content-length": "x"},
    )
    assert response.status_code < 500
