"""Webhooks through the API and the server's own sender: a slow receiver never slows devices."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from core.base.settings import Settings
from core.models import WebhookOutbox
from tests.support.fakes.receiver import Receiver

RESULTS = ("delivered", "failed", "dead")

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


def test_metrics_count_deliveries_failures_and_dead_ones_and_the_outbox(
    api_settings: Settings, engine, session_factory, receiver: Receiver
) -> None:
    """One delivery succeeds; one fails, is retried and fails again (dead); the exporter's gauges see the
    dead one and the outbox drained."""
    from core.events import webhooks
    from nexmdm_api import create_app
    from tests.support.livemetrics import until, value

    settings = api_settings.with_overrides(webhook_max_attempts=2, webhook_backoff_seconds=0.05)
    receiver.respond = lambda d: 500 if d.event == "webhook.test" and d.document["data"]["endpoint_id"] == bad else None
    with session_factory.begin() as db:
        _, good_endpoint = webhooks.add_endpoint(db, url=receiver.url, events=["device.offline"], secret=SECRET)
        _, bad_endpoint = webhooks.add_endpoint(db, url=receiver.url, events=["device.offline"], secret=SECRET)
        bad = bad_endpoint["id"]
        webhooks.send_test(db, good_endpoint["id"])
        webhooks.send_test(db, bad)
    # the counters belong to the test process, which served other apps before this one
    before = {r: REGISTRY.get_sample_value("nexmdm_webhook_deliveries_total", {"result": r}) or 0 for r in RESULTS}

    def counted(text: str) -> dict[str, float]:
        return {r: (value(text, "nexmdm_webhook_deliveries_total", result=r) or 0) - before[r] for r in RESULTS}

    with TestClient(create_app(settings)) as client:
        text = until(
            lambda: client.get("/metrics").text,
            lambda t: value(t, "nexmdm_webhook_dead_deliveries") == 1 and counted(t)["dead"] == 1,
        )
    assert counted(text) == {"delivered": 1, "failed": 1, "dead": 1}
    assert value(text, "nexmdm_webhook_outbox_deliveries") == 0


def test_the_outbox_gauge_counts_waiting_deliveries(api_settings: Settings, engine, session_factory) -> None:
    """A receiver that cannot be reached (a refused private address): its deliveries wait in the outbox."""
    from core.events import webhooks
    from nexmdm_api import create_app
    from tests.support.livemetrics import until, value

    settings = api_settings.with_overrides(webhook_allow_private=False)
    with session_factory.begin() as db:
        _, endpoint = webhooks.add_endpoint(db, url="https://127.0.0.1:9/hook", events=["device.offline"])
        for _ in range(3):
            webhooks.send_test(db, endpoint["id"])
    with TestClient(create_app(settings)) as client:
        until(lambda: client.get("/metrics").text, lambda t: value(t, "nexmdm_webhook_outbox_deliveries") == 3)
