"""Typed acks on both databases: a result stored or refused (the command stays pending), error codes for
campaign failure reasons, lost mode and ``@lost``, locations kept by retention and every read audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.errors import InvalidArgument, NotFound
from core.base.settings import Settings
from core.commands import dispatches
from core.commands.catalogue import InvalidResult
from core.devices import locations, selectors
from core.enrollment.enroll import enroll_device, revoke_device
from core.enrollment.tokens import create_enrollment_token
from core.events.audit import Actor
from core.models import AuditEvent, DeviceLocation, FcmDispatch
from core.ops.retention import run_all_retention_cleanups
from core.storage.types import utcnow
from tests.support.databases import add_device

FIX = {"lat": 48.8566, "lon": 2.3522, "accuracy_m": 8.0, "fixed_at": "2026-01-02T10:00:00+01:00"}
ACTOR = Actor("key:ops", "127.0.0.1")


def _send(factory: sessionmaker[Session], settings: Settings, key: str, action: str, payload: Any = None) -> None:
    with factory.begin() as db:
        dispatches.create_command(
            db, settings, request_id=key, device_id="dev_1", action=action, payload=payload, actor=ACTOR
        )


def _ack(factory: sessionmaker[Session], key: str, status: str = "completed", **kw: Any) -> dict[str, Any]:
    with factory.begin() as db:
        return dispatches.ack_command(db, device_id="dev_1", request_id=key, status=status, **kw)[1]


def _lost(factory: sessionmaker[Session], settings: Settings) -> set[str]:
    with factory() as db:
        return set(db.execute(selectors.matching_ids(selectors.parse("@lost=true"), settings)).scalars())


def test_a_result_is_stored_or_refused_and_the_command_stays_pending(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    add_device(session_factory, "dev_1")
    _send(session_factory, settings, "loc-1", "locate")
    with pytest.raises(InvalidResult) as caught:
        _ack(session_factory, "loc-1", result={**FIX, "lat": 120})
    assert caught.value.field == "result.lat"
    with pytest.raises(InvalidResult):
        _ack(session_factory, "loc-1")  # locate must say where
    with session_factory() as db:
        assert dispatches.get_dispatch(db, "loc-1")["status"] == "pending"
        assert db.execute(select(func.count()).select_from(DeviceLocation)).scalar_one() == 0
    acked = _ack(session_factory, "loc-1", result=FIX | {"provider": "fused"})
    assert acked["status"] == "acked" and acked["result"] == FIX and acked["error_code"] is None
    again = _ack(session_factory, "loc-1", result=FIX)  # the same ack again: nothing changes
    assert again["result"] == FIX
    with session_factory() as db:
        rows = db.execute(select(DeviceLocation)).scalars().all()
        assert [(r.source, r.request_id, r.lat) for r in rows] == [("locate", "loc-1", 48.8566)]
        assert rows[0].fixed_at == utcnow().replace(2026, 1, 2, 9, 0, 0, 0)  # +01:00 stored as UTC

    _send(session_factory, settings, "apk-1", "install_apk", {"build_id": 4})
    with pytest.raises(InvalidArgument, match="error_code must be one of"):
        _ack(session_factory, "apk-1", status="failed", error_code="DISK_FULL")
    failed = _ack(session_factory, "apk-1", status="failed", error_code="INSUFFICIENT_STORAGE", detail="12 MB free")
    assert failed["status"] == "failed" and failed["error_code"] == "INSUFFICIENT_STORAGE" and failed["result"] is None
    with session_factory() as db:  # stored as SQL NULL, not JSON null
        assert db.execute(select(func.count()).where(FcmDispatch.result.is_(None))).scalar_one() == 1
    with pytest.raises(NotFound):
        _ack(session_factory, "nope")


def test_campaign_targets_carry_their_error_code(session_factory: sessionmaker[Session], settings: Settings) -> None:
    for device_id in ("dev_1", "dev_2"):
        add_device(session_factory, device_id)
    with session_factory.begin() as db:
        _, campaign = fleet.create_campaign(
            db, settings, idempotency_key="c1", action="install_apk", payload={"build_id": 1}, selector="all"
        )
    fleet.run_due(session_factory, settings)
    request_id = f"{campaign['id']}:dev_2"
    with session_factory.begin() as db:
        dispatches.ack_command(db, device_id="dev_2", request_id=request_id, status="failed", error_code="TIMEOUT")
    with session_factory() as db:
        failed = fleet.campaign_devices(db, campaign["id"], status="failed")
    assert [(t["device_id"], t["error_code"]) for t in failed] == [("dev_2", "TIMEOUT")]


def test_lost_mode_and_the_lost_selector(session_factory: sessionmaker[Session], settings: Settings) -> None:
    add_device(session_factory, "dev_1")
    add_device(session_factory, "dev_2")
    _send(session_factory, settings, "lost-1", "lost_mode", {"message": "Return to store 7", "phone": "+1 555 0100"})
    assert _lost(session_factory, settings) == set()  # not before the device acks it
    with session_factory.begin() as db, pytest.raises(locations.NotInLostMode):
        locations.report_location(db, device_id="dev_1", fix=FIX)
    _ack(session_factory, "lost-1", result={"location": FIX})
    assert _lost(session_factory, settings) == {"dev_1"}
    with session_factory() as db:
        others = db.execute(selectors.matching_ids(selectors.parse("@lost!=true"), settings)).scalars().all()
        assert others == ["dev_2"]
        assert selectors.count_matching(db, selectors.parse("@lost in (true,false)"), settings) == 2
    with session_factory.begin() as db:
        reported = locations.report_location(db, device_id="dev_1", fix=FIX | {"lat": 48.9})
        assert reported["source"] == "lost_mode" and reported["request_id"] is None
        with pytest.raises(InvalidArgument, match="future"):
            locations.report_location(db, device_id="dev_1", fix=FIX | {"fixed_at": "2999-01-01T00:00:00Z"})
    with session_factory.begin() as db:
        seen = locations.last_location(db, "dev_1", actor=ACTOR)
    assert seen["lost_mode"]["message"] == "Return to store 7" and seen["lost_mode"]["phone"] == "+1 555 0100"
    assert {r["source"] for r in _history(session_factory)} == {"lost_mode"}  # the ack's fix and the report
    _send(session_factory, settings, "found-1", "lost_mode_off")
    _ack(session_factory, "found-1")
    assert _lost(session_factory, settings) == set()


def test_a_reenrolled_device_starts_outside_lost_mode(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_factory.begin() as db:
        secret, _ = create_enrollment_token(db, uses=2)
        enroll_device(db, enrollment_secret=secret, device_id="dev_1")
    _send(session_factory, settings, "lost-1", "lost_mode", {"message": "stolen"})
    _ack(session_factory, "lost-1")
    assert _lost(session_factory, settings) == {"dev_1"}
    with session_factory.begin() as db:
        revoke_device(db, "dev_1")
        enroll_device(db, enrollment_secret=secret, device_id="dev_1")
    assert _lost(session_factory, settings) == set()


def _history(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    with factory.begin() as db:
        return locations.list_locations(db, "dev_1", actor=ACTOR)


def test_locations_are_kept_for_their_retention_and_every_read_is_audited(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    add_device(session_factory, "dev_1")
    with session_factory.begin() as db:
        for index in range(3):
            locations.record_fix(db, device_id="dev_1", fix=locations.check_fix(FIX | {"lat": index}), source="locate")
        db.execute(
            update(DeviceLocation).where(DeviceLocation.lat < 2).values(received_at=utcnow() - timedelta(days=8))
        )
    with session_factory.begin() as db:
        assert locations.last_location(db, "dev_1", actor=ACTOR)["location"]["lat"] in (0, 1, 2)
        with pytest.raises(NotFound):
            locations.last_location(db, "ghost", actor=ACTOR)
    assert len(_history(session_factory)) == 3
    with session_factory() as db:
        dry = run_all_retention_cleanups(db, dry_run=True)
    assert dry["device_locations"]["would_delete"] == 2
    with session_factory() as db:
        done = run_all_retention_cleanups(db)
    assert done["device_locations"]["deleted"] == 2
    assert [r["lat"] for r in _history(session_factory)] == [2.0]
    with session_factory() as db:
        audit = db.execute(select(AuditEvent).where(AuditEvent.action == "location.read")).scalars().all()
    # two history reads and one last-location read; the refused read of an unknown device rolled back
    assert sorted((a.details or {}).get("what") for a in audit) == ["history", "history", "last"]
    assert {(a.actor, a.target, a.outcome) for a in audit} == {("key:ops", "dev_1", "success")}
