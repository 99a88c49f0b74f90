"""One maintenance leader among every server process (the ``maintenance`` lease), handed over on stop."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.ops import leases, maintenance
from core.ops.maintenance import LEADER_LEASE
from nexmdm_api import create_app


def _leader(factory: sessionmaker[Session]) -> str | None:
    with factory() as db:
        return leases.holder_of(db, LEADER_LEASE)


def _until(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_leader_and_handover(
    api_settings: Settings, engine, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "ROUND_SECONDS", 0.2)  # a maintenance round every 0.2 s
    with TestClient(create_app(api_settings)) as a:
        first = a.app.state.maintenance_holder
        _until(lambda: _leader(session_factory) == first)
        with TestClient(create_app(api_settings)) as b:
            second = b.app.state.maintenance_holder
            time.sleep(0.2)
            assert _leader(session_factory) == first  # b runs but does not lead
            a.__exit__(None, None, None)  # a stops cleanly: it releases, b takes over at its next round
            _until(lambda: _leader(session_factory) == second)


def test_a_step_that_keeps_failing_stops_no_other(
    api_settings: Settings, engine, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal counters' flush failing at every round must not stop the lease, campaigns or sweeps."""
    from nexmdm_api.auditbuffer import AuditBuffer

    def broken(self: AuditBuffer, sessions: object) -> None:
        raise RuntimeError("an aggregate the database refuses")

    calls: list[str] = []
    monkeypatch.setattr(AuditBuffer, "flush", broken)
    monkeypatch.setattr(maintenance.fleet, "run_due", lambda *a, **k: calls.append("campaigns"))
    monkeypatch.setattr(maintenance, "ROUND_SECONDS", 0.2)
    monkeypatch.setattr(maintenance, "CAMPAIGN_EVERY_SECONDS", 0.05)
    with TestClient(create_app(api_settings)) as client:
        holder = client.app.state.maintenance_holder
        _until(lambda: _leader(session_factory) == holder)  # elected although the flush fails first
        _until(lambda: len(calls) >= 3)  # and campaigns keep running


def _sample(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_the_metrics_exporter_hands_over_and_a_former_one_exports_zeros(
    settings: Settings, engine, session_factory: sessionmaker[Session]
) -> None:
    """One process exports the fleet gauges (the ``metrics`` lease); one that lost the lease sets them to 0,
    so that no stale figure outlives the hand-over (0 is neutral under the dashboards' ``max``)."""
    from sqlalchemy import text

    from nexmdm_api.auditbuffer import AuditBuffer
    from nexmdm_api.background import METRICS_LEASE, _Maintenance
    from nexmdm_api.db import open_database
    from tests.support.cli_fleet import EXPECTED, seed_fleet

    seed_fleet(session_factory)
    database = open_database(settings)
    try:
        a = _Maintenance(database, settings, "head", leases.new_holder("api"), AuditBuffer())
        b = _Maintenance(database, settings, "head", leases.new_holder("api"), AuditBuffer())
        a.round()
        b.round()
        assert (a.exporter, b.exporter) == (True, False)
        assert _sample("nexmdm_fleet_devices", state="offline") == EXPECTED["devices"]["offline"]
        assert _sample("nexmdm_push_queue_commands") == EXPECTED["push_queue_depth"]
        with session_factory() as db, db.begin():  # a stalls past its lease: b takes it at its next round
            db.execute(
                text("UPDATE leases SET expires_at = :past WHERE name = :name"),
                {"past": "2000-01-01 00:00:00", "name": METRICS_LEASE},
            )
        b.round()
        assert b.exporter and b.gauges._values  # a new exporter computes at once, whatever the period
        a.round()  # a notices: its figures go to 0
        assert not a.exporter
        assert _sample("nexmdm_fleet_devices", state="offline") == 0
        assert _sample("nexmdm_fleet_gauges_updated_timestamp_seconds") == 0
        assert _sample("nexmdm_push_queue_commands") == 0
        b.round()  # the exporter writes its values again every round
        assert _sample("nexmdm_fleet_devices", state="offline") == EXPECTED["devices"]["offline"]
        assert _sample("nexmdm_push_queue_commands") == EXPECTED["push_queue_depth"]
        b.hand_over()  # a clean stop: zeros, and the lease is free for a at once
        assert _sample("nexmdm_fleet_devices", state="offline") == 0
        with session_factory() as db:
            assert leases.holder_of(db, METRICS_LEASE) is None
        a.round()
        assert a.exporter
        assert _sample("nexmdm_fleet_devices", state="offline") == EXPECTED["devices"]["offline"]
    finally:
        database.engine.dispose()
        database.read_engine.dispose()


def test_only_the_leader_sweeps(settings: Settings, engine, session_factory: sessionmaker[Session]) -> None:
    """Two maintenance loops, one round each: the one that does not hold the lease runs neither the expiry
    sweep nor the presence sweep (they would be safe twice, but each is a full scan on every node)."""
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from core.commands import dispatches
    from core.models import DevicePresence, FcmDispatch
    from core.storage.types import utcnow
    from tests.support.databases import add_device

    a = maintenance.Maintenance(session_factory, engine, settings, "holder-a")
    b = maintenance.Maintenance(session_factory, engine, settings, "holder-b")
    assert a.round() and a.leader  # a leads (and sweeps an empty fleet)
    add_device(session_factory, "dev_a", last_seen_at=utcnow())
    with session_factory.begin() as db:
        dispatches.create_command(db, settings, request_id="old-1", device_id="dev_a", action="ping")
        db.execute(
            update(FcmDispatch).values(created_at=utcnow() - timedelta(seconds=settings.command_ttl_seconds + 60))
        )

    def swept() -> tuple[str, int]:
        with session_factory() as db:
            status = db.scalars(select(FcmDispatch.status)).one()
            return status, db.scalar(select(func.count()).select_from(DevicePresence)) or 0

    assert b.round() and not b.leader
    assert swept() == ("pending", 0)  # b swept nothing: no expiry, no presence row
    a.last_sweep = 0.0  # a's next sweep is due (it sweeps every SWEEP_EVERY_SECONDS)
    assert a.round() and a.leader
    assert swept() == ("expired", 1)  # the leader's sweeps see both
