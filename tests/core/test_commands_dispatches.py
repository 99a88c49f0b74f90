"""``core.commands.dispatches``: idempotent commands, ack rules, statistics, refused payloads and request ids."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import Conflict, InvalidArgument, NotFound
from core.base.settings import Settings
from core.commands import dispatches
from core.models import Device, FcmDispatch


def _device(factory: sessionmaker[Session], device_id: str = "dev_1") -> None:
    with factory.begin() as db:
        db.add(Device(id=device_id))


def test_command_idempotency_and_mismatch(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    _device(session_factory, "dev_2")
    with session_factory.begin() as db:
        created, first = dispatches.create_command(
            db,
            settings,
            request_id="k1",
            device_id="dev_1",
            action="lost_mode",
            payload={"phone": "+1555", "message": "m"},
        )
        replay_created, replay = dispatches.create_command(
            db,
            settings,
            request_id="k1",
            device_id="dev_1",
            action="lost_mode",
            payload={"message": "m", "phone": "+1555"},
        )
    assert created and not replay_created and replay["request_id"] == first["request_id"]
    for change in (
        {"device_id": "dev_2"},
        {"action": "lock", "payload": {"message": "m"}},
        {"payload": {"message": "n"}},
    ):
        args = {
            "request_id": "k1",
            "device_id": "dev_1",
            "action": "lost_mode",
            "payload": {"message": "m", "phone": "+1555"},
        }
        args |= change
        with session_factory() as db, pytest.raises(dispatches.IdempotencyMismatch):
            dispatches.create_command(db, settings, **args)
    with session_factory() as db, pytest.raises(InvalidArgument, match="unknown action"):
        dispatches.create_command(db, settings, request_id="k2", device_id="dev_1", action="selfdestruct")
    with session_factory() as db, pytest.raises(NotFound):
        dispatches.create_command(db, settings, request_id="k3", device_id="ghost", action="ping")


def test_ack_rules(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    _device(session_factory, "dev_2")
    with session_factory.begin() as db:
        dispatches.create_command(db, settings, request_id="k1", device_id="dev_1", action="ping")
        assert [d["request_id"] for d in dispatches.pending_commands(db, "dev_1")] == ["k1"]
    with session_factory.begin() as db, pytest.raises(NotFound):
        dispatches.ack_command(db, device_id="dev_2", request_id="k1", status="completed")
    with session_factory.begin() as db:
        changed, acked = dispatches.ack_command(db, device_id="dev_1", request_id="k1", status="completed")
        assert changed and acked["status"] == "acked"
    with session_factory.begin() as db:
        changed, again = dispatches.ack_command(db, device_id="dev_1", request_id="k1", status="completed")
        assert not changed and again["acked_at"] == acked["acked_at"]
        with pytest.raises(Conflict):
            dispatches.ack_command(db, device_id="dev_1", request_id="k1", status="failed")
        assert dispatches.pending_commands(db, "dev_1") == []
        assert [h["status"] for h in dispatches.get_dispatch(db, "k1")["history"]] == ["pending", "acked"]


def test_stats_count_replays_durably(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    for _ in range(3):
        with session_factory.begin() as db:
            dispatches.create_command(db, settings, request_id="k1", device_id="dev_1", action="ping")
    with session_factory.begin() as db:
        _, k2 = dispatches.create_command(db, settings, request_id="k2", device_id="dev_1", action="sync")
        db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.request_id == "k2")
            .values(sent_at=k2["created_at"] + timedelta(milliseconds=250), fcm_status="sent")
        )
    with session_factory() as db:
        stats = dispatches.dispatch_stats(db)
    assert stats["total"] == 2 and stats["replays"] == 2 and stats["requests"] == 4
    assert stats["idempotency_hit_rate"] == pytest.approx(0.5)
    assert stats["by_action"] == {"ping": 1, "sync": 1}
    assert stats["push_latency_ms"]["count"] == 1
    assert stats["push_latency_ms"]["p50"] == pytest.approx(250, abs=1)


def test_payload_strings_with_nul_or_control_characters_are_refused(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _device(session_factory)
    for payload in ({"msg": "a\x00b"}, {"k\x07": 1}, {"list": ["ok", "\u202e"]}):
        with session_factory() as db, pytest.raises(InvalidArgument, match="control"):
            dispatches.create_command(db, settings, request_id="nul", device_id="dev_1", action="ring", payload=payload)


def test_pending_is_not_a_request_id(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    with session_factory() as db, pytest.raises(InvalidArgument, match="reserved"):
        dispatches.create_command(db, settings, request_id="pending", device_id="dev_1", action="ring")
