"""One maintenance leader among every server process (the ``maintenance`` lease), handed over on stop."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core import leases
from core.settings import Settings
from nexmdm_api import background, create_app
from nexmdm_api.background import LEADER_LEASE


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
    monkeypatch.setattr(background, "QUEUE_GAUGE_SECONDS", 0.2)  # a maintenance round every 0.2 s
    with TestClient(create_app(api_settings)) as a:
        first = a.app.state.maintenance_holder
        _until(lambda: _leader(session_factory) == first)
        with TestClient(create_app(api_settings)) as b:
            second = b.app.state.maintenance_holder
            time.sleep(0.2)
            assert _leader(session_factory) == first  # b runs but does not lead
            a.__exit__(None, None, None)  # a stops cleanly: it releases, b takes over at its next round
            _until(lambda: _leader(session_factory) == second)
