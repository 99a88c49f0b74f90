"""Remediation on both databases: a noncompliant ``required`` app with a ``build`` gets one ``install_apk`` a
day, through the command path, within the per-device cap, and nothing in the cases that must get nothing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.commands import dispatches
from core.events.audit import Actor
from core.inventory.document import check_report
from core.inventory.store import put_inventory
from core.models import ApkBuild, AuditEvent, Device, DeviceLostMode, FcmDispatch
from core.profiles import compliance, effective, remediation
from core.profiles.sweep import profile_sweep
from core.storage.types import utcnow
from tests.support.inventory import app, body
from tests.support.profiles import apply, blocked, profile, required

POS = "com.acme.pos"


def _build(factory: sessionmaker[Session], version_code: int) -> int:
    with factory.begin() as db:
        build = ApkBuild(
            version_code=version_code,
            version_name=f"{version_code // 100}.0",
            filename=f"pos-{version_code}.apk",
            size_bytes=1,
            sha256="0" * 64,
        )
        db.add(build)
        db.flush()
        return build.id


def _devices(factory: sessionmaker[Session], settings: Settings, held: Mapping[str, int | None]) -> None:
    """Devices holding com.acme.pos at a version (None: not installed), each with its inventory reported."""
    with factory.begin() as db:
        db.add_all(Device(id=device_id) for device_id in held)
    with factory.begin() as db:
        for device_id, version in held.items():
            apps = [app("com.android.chrome", 12000)] + ([app(POS, version)] if version is not None else [])
            put_inventory(db, device_id, check_report(body(apps=apps)), settings)


def _report(factory: sessionmaker[Session], settings: Settings, device_id: str) -> dict[str, Any]:
    """The device reports on its effective profile, saying nothing of its items (the server judges)."""
    with factory.begin() as db:
        effective.refresh_device(db, settings, device_id)
        device = db.get(Device, device_id)
        assert device is not None and device.effective_hash is not None
        return compliance.report(db, settings, device, {"effective_hash": device.effective_hash, "items": []})


def _commands(factory: sessionmaker[Session], device_id: str | None = None) -> list[FcmDispatch]:
    with factory() as db:
        query = select(FcmDispatch).order_by(FcmDispatch.id)
        if device_id is not None:
            query = query.where(FcmDispatch.device_id == device_id)
        return list(db.scalars(query))


def _pos(build: int | None, install: str = "required", low: int | None = 4200) -> dict[str, Any]:
    entry: dict[str, Any] = required(POS, low) if install == "required" else {"package": POS, "install": install}
    if install == "available" and low is not None:
        entry["min_version_code"] = low
    return entry | ({"build": build} if build is not None else {})


def _judged(factory: sessionmaker[Session], settings: Settings, device_id: str) -> remediation.Judged:
    with factory() as db:
        shown = compliance.device_compliance(db, settings, device_id)
        return device_id, effective.document_of(db, shown["reported_hash"]) or {}, shown["items"]


def test_one_install_a_day_through_the_command_path(session_factory: sessionmaker[Session], settings: Settings) -> None:
    build = _build(session_factory, 4200)
    _devices(session_factory, settings, {"r1": 4100, "r2": None})
    apply(session_factory, settings, profile("pos", apps=[_pos(build)]))
    judged = _report(session_factory, settings, "r1")
    assert (judged["state"], judged["reasons"]) == ("noncompliant", ["APP_NOT_UPDATED"])
    today = utcnow()
    [command] = _commands(session_factory, "r1")
    assert command.request_id == remediation.request_id("r1", build, today)
    assert command.request_id == f"remediate:r1:{build}:{today.date().isoformat()}"
    assert (command.action, command.payload, command.status, command.fcm_status) == (
        "install_apk",
        {"build_id": build},
        "pending",
        "pending",
    )
    with session_factory() as db:  # a normal typed command: the device's pending list, the audit trail
        assert [c["request_id"] for c in dispatches.pending_commands(db, "r1")] == [command.request_id]
        audit = db.scalars(select(AuditEvent).where(AuditEvent.target == command.request_id)).one()
        assert (audit.actor, audit.action, (audit.details or {})["device_id"]) == (
            "system:remediation",
            "command.create",
            "r1",
        )
    _report(session_factory, settings, "r1")  # judged again the same day: nothing more, not even a replay
    assert [(c.request_id, c.replay_count) for c in _commands(session_factory, "r1")] == [(command.request_id, 0)]
    assert _report(session_factory, settings, "r2")["reasons"] == ["APP_NOT_INSTALLED"]
    assert [c.payload for c in _commands(session_factory, "r2")] == [{"build_id": build}]

    tomorrow = today + timedelta(days=1)
    with session_factory.begin() as db:  # the next day, while the first one is still pending: nothing
        assert remediation.remediate(db, settings, [_judged(session_factory, settings, "r1")], now=tomorrow) == []
        dispatches.ack_command(
            db, device_id="r1", request_id=command.request_id, status="failed", error_code="INSUFFICIENT_STORAGE"
        )
    with session_factory.begin() as db:  # once it failed, the next day gets another
        sent = remediation.remediate(db, settings, [_judged(session_factory, settings, "r1")], now=tomorrow)
        assert sent == [{"request_id": remediation.request_id("r1", build, tomorrow), "device_id": "r1"}]
    with session_factory.begin() as db:
        assert remediation.remediate(db, settings, [_judged(session_factory, settings, "r1")], now=tomorrow) == []


@pytest.mark.parametrize(
    "case",
    [
        "no build",
        "blocked",
        "available",
        "compliant",
        "removed build",
        "build below minimum",
        "build of another package",
        "off",
        "cap 0",
    ],
)
def test_nothing_to_remediate(session_factory: sessionmaker[Session], settings: Settings, case: str) -> None:
    build = _build(session_factory, 4100 if case == "build below minimum" else 4200)
    entry = {
        "no build": _pos(None),
        "blocked": {"package": POS, "install": "blocked", "build": build},
        "available": _pos(build, "available"),
    }.get(case, _pos(build))
    _devices(session_factory, settings, {"n1": 4300 if case == "compliant" else 4100})
    apply(session_factory, settings, profile("pos", apps=[entry, blocked("com.evil.game")]))
    if case == "removed build":  # withdrawn after the profile named it (`nexmdm apk remove`)
        with session_factory.begin() as db:
            db.execute(update(ApkBuild).where(ApkBuild.id == build).values(removed_at=utcnow()))
    if case == "build of another package":  # a profile stored before builds knew their package
        with session_factory.begin() as db:
            db.execute(update(ApkBuild).where(ApkBuild.id == build).values(package="com.evil.game"))
    if case in ("off", "cap 0"):
        settings = settings.with_overrides(remediation=False) if case == "off" else settings
        settings = settings.with_overrides(remediation_per_device_day=0) if case == "cap 0" else settings
    _report(session_factory, settings, "n1")
    assert _commands(session_factory) == []


@pytest.mark.parametrize("case", ["revoked", "lost mode", "already pending"])
def test_a_device_that_must_not_get_it(session_factory: sessionmaker[Session], settings: Settings, case: str) -> None:
    build = _build(session_factory, 4200)
    _devices(session_factory, settings, {"x1": 4100})
    apply(session_factory, settings, profile("pos", apps=[_pos(build)]))
    judged = _report(session_factory, settings.with_overrides(remediation=False), "x1")  # judged, nothing sent
    assert judged["reasons"] == ["APP_NOT_UPDATED"] and _commands(session_factory) == []
    with session_factory.begin() as db:
        if case == "revoked":
            db.execute(update(Device).where(Device.id == "x1").values(revoked_at=utcnow()))
        elif case == "lost mode":
            db.add(DeviceLostMode(device_id="x1", generation=1, since=utcnow(), message="lost", request_id="lm-1"))
        else:  # an operator's own install of the same build
            dispatches.create_command(
                db, settings, request_id="op-1", device_id="x1", action="install_apk", payload={"build_id": build},
                actor=Actor("cli:test@host"),
            )  # fmt: skip
    with session_factory.begin() as db:
        assert remediation.remediate(db, settings, [_judged(session_factory, settings, "x1")]) == []
    assert [c.request_id for c in _commands(session_factory)] == (["op-1"] if case == "already pending" else [])
    with session_factory.begin() as db:  # the control: without the reason, the same call sends it
        if case == "revoked":
            db.execute(update(Device).where(Device.id == "x1").values(revoked_at=None))
        elif case == "lost mode":
            db.execute(delete(DeviceLostMode))
        else:
            dispatches.cancel_command(db, "op-1")
    with session_factory.begin() as db:
        assert len(remediation.remediate(db, settings, [_judged(session_factory, settings, "x1")])) == 1


def test_the_daily_cap_per_device(session_factory: sessionmaker[Session], settings: Settings) -> None:
    builds = [_build(session_factory, 4200 + i) for i in range(3)]
    packages = ["com.acme.pos", "com.acme.scan", "com.acme.till"]
    _devices(session_factory, settings, {"c1": None})
    entries = [required(p, 4200) | {"build": b} for p, b in zip(packages, builds, strict=True)]
    apply(session_factory, settings, profile("shop", apps=entries))
    capped = settings.with_overrides(remediation_per_device_day=2)
    assert len(_report(session_factory, capped, "c1")["reasons"]) == 1  # APP_NOT_INSTALLED, three items
    assert [c.payload for c in _commands(session_factory)] == [{"build_id": b} for b in builds[:2]]  # build order
    with session_factory.begin() as db:  # the first two finished: still the cap for today
        db.execute(update(FcmDispatch).values(status="failed", finished_at=utcnow()))
    _report(session_factory, capped, "c1")
    assert len(_commands(session_factory)) == 2


@contextmanager
def _statements(factory: sessionmaker[Session]) -> Iterator[list[str]]:
    seen: list[str] = []
    bind = factory.kw["bind"]

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(bind, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(bind, "before_cursor_execute", count)


def test_the_sweep_remediates_a_batch_set_based(session_factory: sessionmaker[Session], settings: Settings) -> None:
    build = _build(session_factory, 4200)
    fleet = {f"s{i:02d}": 4200 for i in range(30)}
    _devices(session_factory, settings, fleet)
    apply(session_factory, settings, profile("pos", apps=[_pos(build)]))
    for device_id in fleet:
        assert _report(session_factory, settings, device_id)["state"] == "compliant"
    with session_factory.begin() as db:  # they all fall back to 4100 and say nothing: the sweep judges them
        for device_id in fleet:
            put_inventory(db, device_id, check_report(body(apps=[app(POS, 4100)])), settings)
    with session_factory.begin() as db:
        effective.refresh_stale(db, settings)
    since = utcnow()
    with session_factory.begin() as db:
        assert compliance.rejudge_changed(db) == 30
    with session_factory.begin() as db, _statements(session_factory) as seen:
        sent = remediation.remediate_judged_since(db, settings, since)
    assert len(sent) == 30
    # the judgements, the one document, the build, the INSERT ... SELECT and the audit rows: not one per device
    assert len(seen) <= 6, seen
    assert {c.device_id for c in _commands(session_factory)} == set(fleet)
    with session_factory.begin() as db:
        for device_id in list(fleet)[:5]:
            put_inventory(db, device_id, check_report(body(apps=[app(POS, 4000)])), settings)
    assert profile_sweep(session_factory, settings)  # judged again by the sweep itself: the same day, nothing new
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 30


def test_an_operator_cannot_take_a_remediation_key(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _devices(session_factory, settings, {"k1": None})
    with session_factory.begin() as db, pytest.raises(InvalidArgument, match="remediate:"):
        dispatches.create_command(db, settings, request_id="remediate:k1:1:2026-12-07", device_id="k1", action="ping")
    assert _commands(session_factory) == []


def test_a_failed_install_is_retried_the_next_day_without_a_new_judgement(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    build = _build(session_factory, 4200)
    _devices(session_factory, settings, {"s1": 4100, "s2": 4100, "s3": 4100})
    apply(session_factory, settings, profile("pos", apps=[_pos(build)]))
    for device_id in ("s1", "s2", "s3"):
        _report(session_factory, settings, device_id)
    first = {c.device_id: c.request_id for c in _commands(session_factory)}
    assert sorted(first) == ["s1", "s2", "s3"]
    with session_factory.begin() as db:  # s1's install fails, s2's is acked (but s2 has not reported since)
        dispatches.ack_command(db, device_id="s1", request_id=first["s1"], status="failed", error_code="TIMEOUT")
        dispatches.ack_command(db, device_id="s2", request_id=first["s2"], status="completed")
    today = utcnow()
    with session_factory.begin() as db:  # the same day: not again
        assert remediation.retry_failed(db, settings, now=today) == []
    tomorrow = today + timedelta(days=1)
    with session_factory.begin() as db:  # the next day, silent s1 gets it again; s2 (acked), s3 (pending) not
        sent = remediation.retry_failed(db, settings, now=tomorrow)
        assert sent == [{"request_id": remediation.request_id("s1", build, tomorrow), "device_id": "s1"}]
    with session_factory.begin() as db:  # once a day
        assert remediation.retry_failed(db, settings, now=tomorrow) == []
    with session_factory.begin() as db:
        assert remediation.retry_failed(db, settings.with_overrides(remediation=False), now=tomorrow) == []
