"""Reads that evaluate a selector run under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` on PostgreSQL.

PostgreSQL really cancels them: the limit is lowered to 1 ms and the selector (``@model``, no index) has
to read 100,000 devices (~7 ms here). Writes by selector and the fleet-wide figures
of ``nexmdm top`` are not limited; the limit in force before is restored, and a stricter one is kept.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.errors import SelectorTooSlow
from core.base.settings import Settings
from core.devices import selectors
from core.devices.listing import list_devices
from core.models import CampaignTarget, Device
from core.ops import fleet_stats
from core.storage.timeouts import selector_reads
from tests.support.fleet import SCANNING, seed_many, seed_pixels

FLEET = 100_000


def _limited(settings: Settings, ms: int) -> Settings:
    return settings.with_overrides(selector_statement_timeout_ms=ms)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_cancels_a_scanning_selector_past_the_limit(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    pixels = seed_pixels(engine, FLEET)
    tight = _limited(settings, 1)
    with session_factory() as db:
        assert [d["device_id"] for d in list_devices(db, settings, selector=SCANNING)] == pixels
    with session_factory() as db, pytest.raises(SelectorTooSlow) as caught:
        list_devices(db, tight, selector=SCANNING)
    error = caught.value
    assert error.code == "selector_too_slow" and error.field == "selector" and error.limit_ms == 1
    assert "'@model=\"Pixel 8\"' ran past its 1 ms time limit (NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS)" in error.message
    assert isinstance(error.__cause__, Exception) and "statement timeout" in str(error.__cause__)

    # nexmdm top: the selector's figures are limited, the fleet-wide ones are not
    with session_factory() as db, pytest.raises(SelectorTooSlow):
        fleet_stats.snapshot(db, tight, selector=selectors.parse(SCANNING))
    with session_factory() as db:
        assert fleet_stats.snapshot(db, tight)["devices"]["total"] == FLEET

    # a write by selector is not: a campaign's snapshot reads the same 100,000 devices
    with session_factory.begin() as db:
        _, campaign = fleet.create_campaign(db, tight, idempotency_key="k", action="ping", selector=SCANNING)
    with session_factory() as db:
        targets = select(func.count()).where(CampaignTarget.campaign_id == campaign["id"])
        assert db.scalar(targets) == 2


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_limit_before_is_restored_and_a_stricter_one_kept(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    def current(db: Session) -> str:
        return str(db.scalar(text("SHOW statement_timeout")))

    with session_factory() as db:
        before = current(db)
        with selector_reads(db, settings):
            assert current(db) == "2s"
        assert current(db) == before
        db.execute(text("SET LOCAL statement_timeout = 500"))
        with selector_reads(db, settings):
            assert current(db) == "500ms"  # the role's or the operator's stricter limit stays
        assert current(db) == "500ms"
        with selector_reads(db, _limited(settings, 0)):  # 0: no limit of its own
            assert current(db) == "500ms"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_has_no_statement_limit(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as db:
        seed_many(db, 2000)
        db.execute(update(Device).where(Device.id == "d000007").values(model="Pixel 8"))
    with session_factory() as db:
        found = list_devices(db, _limited(settings, 1), selector=SCANNING)
    assert [d["device_id"] for d in found] == ["d000007"]
