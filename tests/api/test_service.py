"""Health, readiness, metrics, OpenAPI, the error shape, the auth limiter and an unreachable database."""

from __future__ import annotations

import time
from typing import Any

from litestar.testing import TestClient

from core.base.settings import Settings
from nexmdm_api import create_app

DEVICE_PATHS = ["/v1/enroll", "/v1/heartbeat", "/v1/commands/pending", "/v1/commands/{request_id}/ack"]


def test_health_and_readiness(client: TestClient[Any]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_readiness_fails_on_an_unmigrated_database(backend: str, databases, tmp_path) -> None:
    settings = Settings(database_url=databases.create(backend), data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "retry-after" in response.headers
        assert "not migrated" in response.json()["detail"]
        heartbeat = client.post("/v1/heartbeat", json={}, headers={"Authorization": "Bearer nxd_" + "x" * 43})
        assert heartbeat.status_code == 503


def test_unreachable_database_is_a_fast_503(tmp_path) -> None:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:9/nexmdm", data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        response = client.post("/v1/heartbeat", json={"status": "ok"}, headers={"Authorization": "Bearer nxd_abc"})
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.headers["content-type"] == "application/problem+json"
        assert client.get("/readyz").status_code == 503
        assert time.monotonic() - started < 5


def test_metrics(client: TestClient[Any]) -> None:
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "nexmdm_requests_total" in response.text


def test_openapi_describes_every_endpoint_with_security_and_errors(client: TestClient[Any]) -> None:
    spec = client.get("/schema/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert set(schemes) == {"enrollmentToken", "deviceToken", "adminKey"}
    paths = spec["paths"]
    expected = {
        ("post", "/v1/enroll"),
        ("post", "/v1/heartbeat"),
        ("get", "/v1/apk/latest"),
        ("get", "/v1/apk/download/latest"),
        ("get", "/v1/apk/download/{build_id}"),
        ("get", "/v1/commands/pending"),
        ("post", "/v1/commands/{request_id}/ack"),
        ("post", "/v1/devices/{device_id}/commands"),
        ("get", "/v1/commands/{request_id}"),
        ("get", "/v1/devices"),
        ("get", "/v1/devices/{device_id}"),
        ("get", "/v1/devices/{device_id}/heartbeats"),
        ("post", "/v1/apk/builds"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    }
    for method, path in expected:
        assert method in paths.get(path, {}), (method, path)
        operation = paths[path][method]
        if path.startswith("/v1/"):
            assert operation["security"], path
            assert "401" in operation["responses"] and "503" in operation["responses"], path
            problem = operation["responses"]["401"]["content"]
            assert "application/problem+json" in problem, path
    heartbeat = paths["/v1/heartbeat"]["post"]["responses"]
    assert {"200", "201", "400", "403", "413", "415", "422", "429"} <= set(heartbeat)
    command = paths["/v1/devices/{device_id}/commands"]["post"]
    assert {"200", "202", "400", "404", "422"} <= set(command["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in command["parameters"])


def test_failed_authentication_is_limited_per_address_but_valid_credentials_pass(
    api_settings: Settings, engine, make_token
) -> None:
    settings = api_settings.with_overrides(auth_failure_limit=3, auth_failure_window_seconds=60)
    with TestClient(create_app(settings)) as client:
        token = make_token()
        device = client.post("/v1/enroll", json={"device_id": "dev_001"}, headers={"Authorization": f"Bearer {token}"})
        good = {"Authorization": f"Bearer {device.json()['device_token']}"}
        bad = {"Authorization": "Bearer nxd_" + "x" * 43}
        codes = [client.post("/v1/heartbeat", json={}, headers=bad).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]  # a limit of 3: three 401s, then 429
        limited = client.post("/v1/heartbeat", json={})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert client.post("/v1/heartbeat", json={"status": "ok"}, headers=good).status_code == 201


def test_unknown_routes_and_methods_are_problems(client: TestClient[Any]) -> None:
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    wrong = client.delete("/v1/heartbeat")
    assert wrong.status_code == 405 and wrong.headers["content-type"] == "application/problem+json"


def test_revoked_admin_key_is_401(client: TestClient[Any], admin: dict[str, str], session_factory) -> None:
    from core.access import keys as admin_keys

    assert client.get("/v1/devices", headers=admin).status_code == 200
    with session_factory.begin() as db:
        admin_keys.revoke_admin_key(db, "ops")
    response = client.get("/v1/devices", headers=admin)
    assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"


def test_schema_viewer_and_bad_path_types(client: TestClient[Any], admin: dict[str, str]) -> None:
    assert client.get("/schema").status_code == 200
    response = client.get("/v1/apk/download/not-a-number", headers=admin)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
