"""One maintenance leader among every server process (the ``maintenance`` lease), handed over on stop."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core import leases, maintenance
from core.maintenance import LEADER_LEASE
from core.settings import Settings
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
