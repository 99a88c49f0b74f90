"""Commands accepted by the API are pushed by the server's own delivery worker (fake FCM on loopback)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, update

from core.base.settings import Settings
from core.commands import dispatches
from core.models import Device, FcmDispatch
from nexmdm_api import create_app
from tests.support.api import bearer
from tests.support.fakes.fcm import FakeFcm, write_service_account


@pytest.fixture
def api_settings(settings: Settings, fake_fcm: FakeFcm, tmp_path: Path) -> Settings:
    key = write_service_account(tmp_path / "sa.json", f"{fake_fcm.url}/token")
    return settings.with_overrides(fcm_credentials=key, fcm_endpoint=fake_fcm.url, delivery_poll_seconds=0.05)


def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_accepted_command_is_pushed_within_a_second(
    client: TestClient[Any],
    enroll: Callable[..., str],
    admin: dict[str, str],
    fake_fcm: FakeFcm,
) -> None:
    enroll("dev_push", fcm_token="fcm-dev-push")
    accepted = time.monotonic()
    response = client.post(
        "/v1/devices/dev_push/commands",
        json={"action": "ring", "payload": {"seconds": 5}},
        headers=admin | {"Idempotency-Key": "push-1"},
    )
    assert response.status_code == 202, response.text
    # pushed by the server's own worker with nobody polling: the outcome is the point; the time is bounded
    # by the worker's poll interval plus what a loaded runner adds, so only a generous 10 s is asserted
    _until(lambda: fake_fcm.sent_request_ids() == ["push-1"])
    assert time.monotonic() - accepted < 10 * max(1.0, client.app.state.settings.delivery_poll_seconds)
    message = fake_fcm.messages[0].body["message"]
    assert message["token"] == "fcm-dev-push" and message["data"] == {"request_id": "push-1", "action": "ring"}
    _until(lambda: client.get("/v1/commands/push-1", headers=admin).json()["fcm_status"] == "sent")
    shown = client.get("/v1/commands/push-1", headers=admin).json()
    assert [step["status"] for step in shown["history"]] == ["pending", "sent"]
    # a replay of the same request pushes nothing more
    again = client.post(
        "/v1/devices/dev_push/commands",
        json={"action": "ring", "payload": {"seconds": 5}},
        headers=admin | {"Idempotency-Key": "push-1"},
    )
    assert again.status_code == 200
    time.sleep(0.3)
    assert fake_fcm.sent_request_ids() == ["push-1"]


def test_push_metrics(
    client: TestClient[Any], enroll: Callable[..., str], admin: dict[str, str], fake_fcm: FakeFcm
) -> None:
    enroll("dev_m", fcm_token="fcm-dev-m")
    client.post("/v1/devices/dev_m/commands", json={"action": "ping"}, headers=admin | {"Idempotency-Key": "m-1"})
    _until(lambda: len(fake_fcm.messages) == 1)
    _until(lambda: 'nexmdm_fcm_sends_total{result="sent"}' in client.get("/metrics").text)
    text = client.get("/metrics").text
    assert "nexmdm_push_latency_seconds_count" in text
    assert "nexmdm_push_queue_commands" in text


def test_without_credentials_commands_wait_for_polling(
    settings: Settings, engine: Engine, make_token: Callable[..., str], admin: dict[str, str]
) -> None:
    with TestClient(create_app(settings)) as plain:
        assert plain.app.state.delivery_worker is None
        enrolled = plain.post(
            "/v1/enroll", json={"device_id": "dev_poll", "fcm_token": "t"}, headers=bearer(make_token())
        )
        device = bearer(enrolled.json()["device_token"])
        accepted = plain.post(
            "/v1/devices/dev_poll/commands", json={"action": "sync"}, headers=admin | {"Idempotency-Key": "poll-1"}
        )
        assert accepted.status_code == 202
        time.sleep(0.3)
        assert plain.get("/v1/commands/poll-1", headers=admin).json()["fcm_status"] == "pending"
        pending = plain.get("/v1/commands/pending", headers=device).json()["items"]
        assert [c["request_id"] for c in pending] == ["poll-1"]


def test_server_expires_unacknowledged_commands_without_fcm(
    settings: Settings, engine: Engine, session_factory, admin: dict[str, str]
) -> None:
    with session_factory.begin() as db:
        db.add(Device(id="dev_old"))
        db.flush()
        dispatches.create_command(db, settings, request_id="stale", device_id="dev_old", action="ping")
        dispatches.create_command(db, settings, request_id="fresh", device_id="dev_old", action="ping")
        db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.request_id == "stale")
            .values(created_at=datetime.now(UTC) - timedelta(seconds=settings.command_ttl_seconds + 60))
        )
    with TestClient(create_app(settings)) as plain:
        assert plain.app.state.delivery_worker is None
        _until(lambda: plain.get("/v1/commands/stale", headers=admin).json()["status"] == "expired")
        assert plain.get("/v1/commands/fresh", headers=admin).json()["status"] == "pending"
