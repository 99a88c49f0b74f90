"""Webhooks through the API and the server's own sender: a slow receiver never slows devices."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from core.base.settings import Settings
from core.models import WebhookOutbox
from tests.support.fakes.receiver import Receiver

SECRET = "s" * 40


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.with_overrides(webhook_allow_private=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    fake = Receiver(secret=SECRET).start()
    yield fake
    fake.stop()


def wait_for(condition: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_blocked_receiver_never_slows_heartbeats_or_commands(
    client: TestClient[Any], admin: dict[str, str], enroll, receiver: Receiver, session_factory
) -> None:
    receiver.gate = threading.Event()
    created = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "events": ["device.enrolled", "device.revoked"], "secret": SECRET},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["secret"] is None  # the caller chose it: not echoed
    token = enroll("dev_a")
    wait_for(lambda: receiver.arrived == 1)  # the server's sender is now stuck in the receiver
    for _ in range(5):
        beat = client.post("/v1/heartbeat", json={"status": "ok"}, headers={"Authorization": f"Bearer {token}"})
        assert beat.status_code in (200, 201), beat.text
    command = client.post(
        "/v1/devices/dev_a/commands", json={"action": "ping"}, headers=admin | {"Idempotency-Key": "c-1"}
    )
    assert command.status_code == 202
    pending = client.get("/v1/commands/pending", headers={"Authorization": f"Bearer {token}"}).json()["items"]
    assert [p["request_id"] for p in pending] == ["c-1"]
    assert receiver.received == []  # all of the above happened while the delivery was still stuck
    receiver.gate.set()
    wait_for(lambda: len(receiver.received) == 1)
    assert receiver.received[0].valid and receiver.received[0].event == "device.enrolled"

    def delivered() -> bool:
        with session_factory() as db:
            return db.execute(select(WebhookOutbox.status)).scalars().all() == ["delivered"]

    wait_for(delivered)
    endpoint_id = created.json()["id"]
    page = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=admin).json()
    assert [d["status"] for d in page["items"]] == ["delivered"]
    assert client.get(f"/v1/webhooks/{endpoint_id}/deliveries?failed=true", headers=admin).json()["items"] == []


def test_webhook_admin_endpoints(client: TestClient[Any], admin: dict[str, str]) -> None:
    made = client.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/a", "events": ["device.online"]}, headers=admin
    )
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    listed = client.get("/v1/webhooks", headers=admin).json()
    assert [w["id"] for w in listed["items"]] == [made.json()["id"]]
    assert "secret" not in listed["items"][0]
    for body in (
        {"url": "ftp://x.example.com/", "events": ["device.online"]},
        {"url": "https://x.example.com/", "events": []},
        {"url": "https://x.example.com/", "events": ["device.exploded"]},
        {"url": "https://x.example.com/", "events": ["device.online"], "secret": "short"},
        {"url": "https://x.example.com/", "events": ["device.online"], "extra": 1},
    ):
        assert client.post("/v1/webhooks", json=body, headers=admin).status_code == 422, body
    test = client.post(f"/v1/webhooks/{made.json()['id']}/test", headers=admin)
    assert test.status_code == 202 and test.json()["event_id"].startswith("evt_")
    assert client.post("/v1/webhooks/whk_000000000000/test", headers=admin).status_code == 404
    assert client.post("/v1/webhooks/deliveries/999/redeliver", headers=admin).status_code == 404
    assert client.delete(f"/v1/webhooks/{made.json()['id']}", headers=admin).status_code == 200
    assert client.delete(f"/v1/webhooks/{made.json()['id']}", headers=admin).status_code == 404
