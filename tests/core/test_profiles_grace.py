"""A device's stored compliance on both databases: kept where it changes (a moved hash, a report, the sweep's
grace expiry with its ``device.noncompliant`` exactly once), read alike by counts, selectors and the device,
and backfilled by migration 0020 as the read-time derivation had it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import column, select, table, text, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.devices import selectors
from core.events import webhooks
from core.inventory.document import check_report
from core.inventory.store import put_inventory
from core.models import Device, WebhookOutbox
from core.models.base import JSONType
from core.profiles import compliance, effective, grace
from core.profiles.sweep import profile_sweep
from core.storage.engine import make_engine
from core.storage.migrations import alembic_config
from core.storage.types import UTCDateTime, utcnow
from tests.support.databases import BACKENDS, DatabaseFactory
from tests.support.inventory import app, body
from tests.support.profiles import apply, profile, required

DEVICES = ("c1", "c2", "c3", "c4")


def _seed(factory: sessionmaker[Session], settings: Settings, min_version: int = 4200) -> None:
    with factory.begin() as db:
        db.add_all(Device(id=d) for d in DEVICES)
        webhooks.add_endpoint(db, url="https://hooks.example.com/c", events=["device.noncompliant", "device.compliant"])
    apply(factory, settings, profile("pos", apps=[required("com.acme.pos", min_version)]))
    with factory.begin() as db:  # the sweep, for the devices that enrolled (they start marked)
        effective.refresh_stale(db, settings)


def _report(factory: sessionmaker[Session], settings: Settings, device_id: str, **item: Any) -> str:
    with factory.begin() as db:
        device = db.get_one(Device, device_id)
        items = [{"key": "apps/com.acme.pos", **item}] if item else []
        return str(
            compliance.report(db, settings, device, {"effective_hash": device.effective_hash, "items": items})["state"]
        )


def _inventory(factory: sessionmaker[Session], settings: Settings, device_id: str, version: int) -> None:
    with factory.begin() as db:
        put_inventory(db, device_id, check_report(body(apps=[app("com.acme.pos", version)])), settings)


def _stored(factory: sessionmaker[Session]) -> dict[str, tuple[str, str]]:
    with factory() as db:
        rows = db.execute(select(Device.id, Device.compliance_state, Device.compliance_reasons).order_by(Device.id))
        return {r.id: (r.compliance_state, r.compliance_reasons) for r in rows}


def _selected(factory: sessionmaker[Session], settings: Settings, selector: str) -> set[str]:
    with factory() as db:
        where = selectors.where_clause(selectors.parse(selector), settings, utcnow())
        return set(db.scalars(select(Device.id).where(where)))


def _events(factory: sessionmaker[Session]) -> list[tuple[str, dict[str, Any]]]:
    with factory() as db:
        rows = db.execute(select(WebhookOutbox.event_type, WebhookOutbox.body).order_by(WebhookOutbox.id))
        return [(kind, json.loads(b) if isinstance(b, str) else b) for kind, b in rows]


def _age(factory: sessionmaker[Session], *device_ids: str, seconds: int = 3600) -> None:
    """Their effective hash changed ``seconds`` ago: past the grace (900 s)."""
    with factory.begin() as db:
        db.execute(
            update(Device)
            .where(Device.id.in_(device_ids))
            .values(effective_since=utcnow() - timedelta(seconds=seconds))
        )


def _agree(factory: sessionmaker[Session], settings: Settings) -> None:
    """The summary, the selectors and the device's own read all say what is stored."""
    stored = _stored(factory)
    with factory() as db:
        states = compliance.summary(db, settings)["states"]
        shown = {d: compliance.device_compliance(db, settings, d)["state"] for d in stored}
    assert shown == {d: s for d, (s, _) in stored.items()}
    for state in states:
        assert _selected(factory, settings, f"@compliance={state}") == {d for d, s in shown.items() if s == state}
        assert states[state] == sum(1 for s in shown.values() if s == state)


def test_transitions_pending_to_compliant_and_noncompliant(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, settings)
    assert {s for s, _ in _stored(session_factory).values()} == {"pending"}  # a new hash: pending
    _agree(session_factory, settings)
    _inventory(session_factory, settings, "c1", 4200)
    _inventory(session_factory, settings, "c2", 4100)
    assert _report(session_factory, settings, "c1", state="compliant") == "compliant"
    assert _report(session_factory, settings, "c2", state="compliant") == "noncompliant"  # the server's word
    assert _report(session_factory, settings, "c3", state="pending", reason="PENDING") == "pending"
    stored = _stored(session_factory)
    assert stored["c1"][0] == "compliant" and stored["c2"] == ("noncompliant", ",APP_NOT_UPDATED,")
    assert stored["c3"][0] == stored["c4"][0] == "pending"
    _agree(session_factory, settings)
    assert _selected(session_factory, settings, "@noncompliant(APP_NOT_UPDATED)") == {"c2"}
    with session_factory() as db:
        by_reason = compliance.summary(db, settings, by="reason")
    assert by_reason["groups"] == [{"key": "APP_NOT_UPDATED", "states": {"noncompliant": 1}}]
    assert [kind for kind, _ in _events(session_factory)] == ["device.noncompliant"]  # c2's report only


def test_grace_expiry_writes_the_state_and_fires_the_webhook_exactly_once(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, settings)
    _inventory(session_factory, settings, "c1", 4200)
    _report(session_factory, settings, "c1", state="compliant")
    _report(session_factory, settings, "c2", state="pending", reason="PENDING")  # items still pending
    apply(session_factory, settings, profile("pos", apps=[required("com.acme.pos", 4300)]))  # every hash moves
    assert {s for s, _ in _stored(session_factory).values()} == {"pending"}
    _age(session_factory, "c1", "c2", "c3")  # c4's grace is not over
    assert profile_sweep(session_factory, settings)
    stored = _stored(session_factory)
    # c1 and c2 reported on an older hash: noncompliant, PENDING; c3 never reported: unknown
    assert stored["c1"] == stored["c2"] == ("noncompliant", ",PENDING,")
    assert stored["c3"][0] == "unknown" and stored["c4"][0] == "pending"
    assert _selected(session_factory, settings, "@noncompliant(PENDING)") == {"c1", "c2"}
    _agree(session_factory, settings)
    expired = [data for kind, data in _events(session_factory) if kind == "device.noncompliant"]
    assert sorted(e["data"]["device_id"] for e in expired) == ["c1", "c2"]
    with session_factory() as db:
        digest = db.get_one(Device, "c1").effective_hash
    assert expired[0]["data"] == {
        "device_id": "c1",
        "effective_hash": digest,
        "reasons": ["PENDING"],
        "items": ["apps/com.acme.pos"],
    }
    before = _events(session_factory)
    assert not profile_sweep(session_factory, settings)  # again: nothing moves, nothing is emitted
    _report(session_factory, settings, "c2", state="pending", reason="PENDING")  # still pending: no news
    assert _events(session_factory) == before and _stored(session_factory)["c2"] == ("noncompliant", ",PENDING,")
    _inventory(session_factory, settings, "c1", 4300)
    assert _report(session_factory, settings, "c1", state="compliant") == "compliant"
    assert [kind for kind, _ in _events(session_factory)][-1] == "device.compliant"  # after the grace's noncompliant


def test_a_moved_hash_resets_to_pending_and_no_profile_is_compliant(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, settings)
    _inventory(session_factory, settings, "c1", 4200)
    _report(session_factory, settings, "c1", state="compliant")
    apply(session_factory, settings, profile("pos", apps=[required("com.acme.pos", 4100)]))
    assert _stored(session_factory)["c1"][0] == "pending"
    with session_factory() as db:
        assert compliance.device_compliance(db, settings, "c1")["state"] == "pending"
    with session_factory.begin() as db:
        from core.events.audit import Actor
        from core.profiles import store

        store.delete(db, settings, "pos", Actor("cli:test@host"))
    assert {s for s, _ in _stored(session_factory).values()} == {"compliant"}
    _agree(session_factory, settings)


def test_a_report_on_a_moved_hash_stores_nothing(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, settings)
    with session_factory() as db:
        old = db.get_one(Device, "c1").effective_hash
    apply(session_factory, settings, profile("pos", apps=[required("com.acme.pos", 4100)]))
    with session_factory.begin() as db:
        assert grace.store_judged(db, "c1", str(old), "compliant", ",") is None
    assert _stored(session_factory)["c1"][0] == "pending"


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    return databases.create(request.param)


def test_migration_backfills_the_derived_state(fresh_url: str) -> None:
    cfg = alembic_config(fresh_url)
    command.upgrade(cfg, "0018")
    engine = make_engine(fresh_url)
    now, old = utcnow(), utcnow() - timedelta(hours=2)
    h, g = "a" * 64, "b" * 64
    devices = [  # id, effective_hash, effective_since, report (hash, state, reasons) or None, expected
        ("m1", None, None, None, ("compliant", ",")),
        ("m2", h, old, (h, "compliant", ","), ("compliant", ",")),
        ("m3", h, now, (h, "noncompliant", ",API_LEVEL,"), ("noncompliant", ",API_LEVEL,")),
        ("m4", h, now, (g, "compliant", ","), ("pending", ",PENDING,")),
        ("m5", h, old, (g, "compliant", ","), ("noncompliant", ",PENDING,")),
        ("m6", h, old, (h, "pending", ","), ("noncompliant", ",PENDING,")),
        ("m7", h, old, None, ("unknown", ",PENDING,")),
        ("m8", h, now, None, ("pending", ",PENDING,")),
    ]
    devices_0018 = table("devices", column("id"), column("enrolled_at", UTCDateTime), column("effective_hash"))
    devices_0018.append_column(column("effective_since", UTCDateTime))
    reports = table(
        "device_compliance",
        *(column(c) for c in ("device_id", "reported_hash", "state", "reasons")),
        column("items", JSONType),
        column("reported_at", UTCDateTime),
        column("changed_at", UTCDateTime),
    )
    with engine.begin() as conn:
        for device_id, digest, since, report, _ in devices:
            row = {"id": device_id, "enrolled_at": now, "effective_hash": digest, "effective_since": since}
            conn.execute(devices_0018.insert().values(**row))
            if report is not None:
                hashed, state, reasons = report
                conn.execute(
                    reports.insert().values(
                        device_id=device_id,
                        reported_hash=hashed,
                        state=state,
                        reasons=reasons,
                        items=[],
                        reported_at=now,
                        changed_at=now,
                    )
                )
    engine.dispose()
    command.upgrade(cfg, "0020")
    engine = make_engine(fresh_url)
    with engine.connect() as conn:
        got = dict(
            (r[0], (r[1], r[2]))
            for r in conn.execute(text("SELECT id, compliance_state, compliance_reasons FROM devices"))
        )
    engine.dispose()
    # reasons only matter while noncompliant
    expected = {d: want for d, *_, want in devices}
    assert {d: s for d, (s, _) in got.items()} == {d: s for d, (s, _) in expected.items()}
    assert {d: r for d, (s, r) in got.items() if s == "noncompliant"} == {
        d: r for d, (s, r) in expected.items() if s == "noncompliant"
    }
    command.downgrade(cfg, "0018")
    command.upgrade(cfg, "head")
