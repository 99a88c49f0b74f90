"""The heartbeat hot path (one statement on PostgreSQL) behaves exactly like the helpers it replaces."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base import security
from core.base.errors import Forbidden, InvalidCredentials
from core.base.settings import Settings
from core.heartbeats.store import record_heartbeat_for_token
from core.models import Device, DeviceHeartbeat

T0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def token(session_factory: sessionmaker[Session]) -> str:
    secret = security.new_secret(security.DEVICE_PREFIX)
    with session_factory.begin() as db:
        db.add(Device(id="dev_hot", device_token_hash=security.hash_secret(secret), fcm_token="old"))
        db.add(Device(id="dev_other", device_token_hash=security.hash_secret("nxd_other")))
    return secret


def _beat(factory: sessionmaker[Session], settings: Settings, token: str, at: datetime, **data: object) -> dict:
    with factory.begin() as db:
        return record_heartbeat_for_token(db, token=token, heartbeat_data=data, settings=settings, received_at=at)


def _device(factory: sessionmaker[Session], device_id: str = "dev_hot") -> Device:
    with factory() as db:
        return db.get(Device, device_id)


def test_summary_moves_only_with_a_new_bucket(
    session_factory: sessionmaker[Session], settings: Settings, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nexmdm.db")
    first = _beat(session_factory, settings, token, T0, battery_pct=80, network_type="wifi", agent_version="2.0")
    assert first == {
        "device_id": "dev_hot",
        "created": True,
        "bucket_start": T0,
        "inventory_wanted": True,
        "profile": None,  # no profile matches it: the answer carries no profile hash
    }
    device = _device(session_factory)
    assert (device.last_seen_at, device.last_battery_pct, device.agent_version) == (T0, 80, "2.0")

    again = _beat(session_factory, settings, token, T0 + timedelta(seconds=9.999), battery_pct=10, fcm_token="new")
    assert again["created"] is False and again["bucket_start"] == T0
    device = _device(session_factory)
    assert (device.last_seen_at, device.last_battery_pct) == (T0, 80)  # the summary did not move
    assert device.fcm_token == "new"  # but a new FCM token is taken at once

    later = _beat(session_factory, settings, token, T0 + timedelta(seconds=10), battery_pct=55, plugged=True)
    assert later["created"] is True
    device = _device(session_factory)
    assert (device.last_seen_at, device.last_battery_pct, device.last_plugged) == (
        T0 + timedelta(seconds=10),
        55,
        True,
    )
    assert device.agent_version == "2.0"  # a beat without agent_version keeps the known one
    events = [r.getMessage().split()[1] for r in caplog.records if r.name == "nexmdm.db"]
    assert events == ["event=create", "event=dedup_hit", "event=create"]


def test_fcm_token_revived(session_factory: sessionmaker[Session], settings: Settings, token: str) -> None:
    with session_factory.begin() as db:
        db.execute(update(Device).where(Device.id == "dev_hot").values(fcm_token_dead_at=T0))
    _beat(session_factory, settings, token, T0, fcm_token="old")
    assert _device(session_factory).fcm_token_dead_at is None


def test_another_device_id_writes_nothing(
    session_factory: sessionmaker[Session], settings: Settings, token: str
) -> None:
    with pytest.raises(Forbidden):
        _beat(session_factory, settings, token, T0, device_id="dev_other", fcm_token="stolen")
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(DeviceHeartbeat)).scalar_one() == 0
    assert _device(session_factory).fcm_token == "old"
    assert _beat(session_factory, settings, token, T0, device_id="dev_hot")["created"] is True


def test_unknown_or_revoked_tokens_are_refused(
    session_factory: sessionmaker[Session], settings: Settings, token: str
) -> None:
    with pytest.raises(InvalidCredentials):
        _beat(session_factory, settings, "nxd_" + "x" * 43, T0)
    with session_factory.begin() as db:
        db.execute(update(Device).where(Device.id == "dev_hot").values(revoked_at=T0))
    with pytest.raises(InvalidCredentials):
        _beat(session_factory, settings, token, T0)
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(DeviceHeartbeat)).scalar_one() == 0


def test_empty_agent_version_keeps_the_known_one(
    session_factory: sessionmaker[Session], settings: Settings, token: str
) -> None:
    _beat(session_factory, settings, token, T0, agent_version="3.1")
    _beat(session_factory, settings, token, T0 + timedelta(seconds=10), agent_version="")
    assert _device(session_factory).agent_version == "3.1"


def test_a_late_beat_never_moves_the_summary_back(
    session_factory: sessionmaker[Session], settings: Settings, token: str
) -> None:
    """A beat received at T0 but stored after one received at T0+20 s keeps T0+20 s / 90 on both databases."""
    newer = _beat(session_factory, settings, token, T0 + timedelta(seconds=20), battery_pct=90, agent_version="2.1")
    late = _beat(session_factory, settings, token, T0, battery_pct=10, agent_version="1.0", network_type="none")
    assert newer["created"] is True and late["created"] is True  # both stored, each in its own bucket
    device = _device(session_factory)
    assert (device.last_seen_at, device.last_battery_pct, device.agent_version, device.last_network_type) == (
        T0 + timedelta(seconds=20),
        90,
        "2.1",
        None,
    )
    # a late beat still delivers a new FCM token (that is not part of the summary)
    _beat(session_factory, settings, token, T0 - timedelta(seconds=30), battery_pct=5, fcm_token="newer-token")
    device = _device(session_factory)
    assert (device.last_battery_pct, device.fcm_token) == (90, "newer-token")
    # and the next newer beat moves it on
    _beat(session_factory, settings, token, T0 + timedelta(seconds=40), battery_pct=70)
    assert _device(session_factory).last_battery_pct == 70


def test_inventory_hash_is_compared_without_another_statement(
    session_factory: sessionmaker[Session], settings: Settings, token: str, engine
) -> None:
    from sqlalchemy import event

    held = "a" * 64
    with session_factory.begin() as db:
        db.execute(update(Device).where(Device.id == "dev_hot").values(inventory_hash=held))
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    _beat(session_factory, settings, token, T0 - timedelta(seconds=10))  # caches warm (partitions known)
    event.listen(engine, "before_cursor_execute", count)
    try:
        without = _beat(session_factory, settings, token, T0)
        plain = len(statements)
        same = _beat(session_factory, settings, token, T0 + timedelta(seconds=10), inventory_hash=held)
        assert len(statements) - plain == plain  # the same statements with the hash as without it
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert without["inventory_wanted"] is True  # a device that sends no hash is asked for its inventory
    assert same["inventory_wanted"] is False
    assert _device(session_factory).inventory_seen_at == T0 + timedelta(seconds=10)  # known current then
    other = _beat(session_factory, settings, token, T0 + timedelta(seconds=20), inventory_hash="b" * 64)
    assert other["inventory_wanted"] is True
    assert _device(session_factory).inventory_seen_at == T0 + timedelta(seconds=10)
    with pytest.raises(Exception, match="inventory_hash"):
        _beat(session_factory, settings, token, T0 + timedelta(seconds=30), inventory_hash="XYZ")
