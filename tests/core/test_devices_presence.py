"""device.online / device.offline: one event per transition, a fake clock, no storm after an outage."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.devices import presence
from core.events import webhooks
from core.models import Device, DevicePresence, WebhookOutbox
from core.storage.types import utcnow
from tests.support.databases import add_device, run_together

OFFLINE = 600


@pytest.fixture
def presence_settings(settings: Settings) -> Settings:
    return settings.with_overrides(device_online_seconds=60, device_offline_seconds=OFFLINE)


@pytest.fixture
def subscribed(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as db:
        webhooks.add_endpoint(db, url="https://hooks.example.com/p", events=["device.offline", "device.online"])


def seen(factory: sessionmaker[Session], device_id: str, at: datetime) -> None:
    with factory.begin() as db:
        db.execute(update(Device).where(Device.id == device_id).values(last_seen_at=at))


def events(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with factory() as db:
        rows = db.execute(select(WebhookOutbox).order_by(WebhookOutbox.id)).scalars()
        return [(row.event_type, json.loads(row.body)["data"]["device_id"]) for row in rows]


def test_one_event_per_transition(session_factory, presence_settings, subscribed) -> None:
    t0 = utcnow()
    add_device(session_factory, "dev_a", last_seen_at=t0)
    add_device(session_factory, "dev_b", last_seen_at=t0)
    add_device(session_factory, "dev_never")  # never seen: not tracked
    sweep = lambda at: presence.sweep(session_factory, presence_settings, now=at)  # noqa: E731
    assert sweep(t0 + timedelta(seconds=10)) == {"tracked": 2, "offline": 0, "online": 0}
    for minute in range(1, 10):  # the sweep keeps running every minute; dev_b keeps beating
        seen(session_factory, "dev_b", t0 + timedelta(minutes=minute))
        sweep(t0 + timedelta(minutes=minute, seconds=5))
    assert events(session_factory) == []
    seen(session_factory, "dev_b", t0 + timedelta(minutes=10))
    assert sweep(t0 + timedelta(seconds=OFFLINE + 30))["offline"] == 1
    assert sweep(t0 + timedelta(seconds=OFFLINE + 90))["offline"] == 0  # not per sweep: per transition
    assert events(session_factory) == [("device.offline", "dev_a")]
    seen(session_factory, "dev_a", t0 + timedelta(seconds=OFFLINE + 100))
    assert sweep(t0 + timedelta(seconds=OFFLINE + 110))["online"] == 1
    assert sweep(t0 + timedelta(seconds=OFFLINE + 140))["online"] == 0
    assert events(session_factory) == [("device.offline", "dev_a"), ("device.online", "dev_a")]
    with session_factory() as db:
        states = dict(db.execute(select(DevicePresence.device_id, DevicePresence.state)).all())
    assert states == {"dev_a": "online", "dev_b": "online"}


def test_no_storm_after_a_server_outage(session_factory, presence_settings, subscribed) -> None:
    t0 = utcnow()
    for i in range(20):
        add_device(session_factory, f"dev_{i:02d}", last_seen_at=t0)
    presence.sweep(session_factory, presence_settings, now=t0 + timedelta(seconds=5))
    # the server is down for 3 hours: nobody could beat, and nobody swept
    back = t0 + timedelta(hours=3)
    assert presence.sweep(session_factory, presence_settings, now=back)["offline"] == 0
    for i in range(15):  # most devices come back within the window
        seen(session_factory, f"dev_{i:02d}", back + timedelta(seconds=30 + i))
    for step in range(1, 10):
        assert presence.sweep(session_factory, presence_settings, now=back + timedelta(minutes=step))["offline"] == 0
    after = presence.sweep(session_factory, presence_settings, now=back + timedelta(seconds=OFFLINE + 1))
    assert after["offline"] == 5
    assert sorted(d for _, d in events(session_factory)) == [f"dev_{i:02d}" for i in range(15, 20)]


def test_revoked_devices_are_not_announced(session_factory, presence_settings, subscribed) -> None:
    t0 = utcnow()
    add_device(session_factory, "dev_a", last_seen_at=t0)
    presence.sweep(session_factory, presence_settings, now=t0)
    with session_factory.begin() as db:
        db.execute(update(Device).values(revoked_at=t0 + timedelta(seconds=1)))
    presence.sweep(session_factory, presence_settings, now=t0 + timedelta(seconds=OFFLINE + 60))
    assert events(session_factory) == []


def test_sweeps_in_several_processes_announce_each_transition_once(
    session_factory, presence_settings, subscribed
) -> None:
    """The race is PostgreSQL's; on SQLite the writers queue (BEGIN IMMEDIATE) and the answer must be the same."""
    t0 = utcnow()
    with session_factory.begin() as db:
        db.add_all([Device(id=f"dev_{i:04d}", last_seen_at=t0) for i in range(1500)])
    for minute in range(10):  # the server has been sweeping all along (no outage)
        presence.sweep(session_factory, presence_settings, now=t0 + timedelta(minutes=minute, seconds=1))
    later = t0 + timedelta(seconds=OFFLINE + 5)
    results = run_together(4, lambda _: presence.sweep(session_factory, presence_settings, now=later))
    assert sum(r["offline"] for r in results) == 1500
    announced = [d for kind, d in events(session_factory) if kind == "device.offline"]
    assert len(announced) == len(set(announced)) == 1500
