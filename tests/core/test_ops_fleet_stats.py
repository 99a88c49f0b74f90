"""``core.ops.fleet_stats``: every query of a ``nexmdm top`` refresh can be answered through an index.

The statements one refresh runs are captured and explained: on PostgreSQL with sequential scans
disabled (the planner still picks one when no index can serve the query), on SQLite with EXPLAIN
QUERY PLAN. Only the device-state count reads every device, by design (every state needs every device).
The same holds with a selector (``nexmdm top --selector``) and with campaigns in flight, whose targets and
commands are read through their ``campaign_id`` indexes.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, and_, event, false, func, or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from core.campaigns import release
from core.campaigns.counts import STATUS_COUNTS, live_counts
from core.devices import selectors
from core.enrollment.enroll import revoke_device
from core.models import Campaign, CampaignTarget, FcmDispatch
from core.ops import fleet_stats
from tests.support.cli_fleet import seed_campaigns, seed_fleet, seed_labels
from tests.support.fleet import ack_all, seed_many

BIG_TABLES = ("device_heartbeats", "fcm_dispatches", "campaign_targets", "device_labels")


def _statements(engine: Engine, run: Any) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


@pytest.mark.parametrize("selector", [None, "store=1", "store=1,@state!=online"])
def test_every_query_on_a_big_table_uses_an_index(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Session], selector: str | None
) -> None:
    seed_fleet(session_factory)
    seed_labels(session_factory)
    seed_campaigns(session_factory, settings)
    chosen = None if selector is None else selectors.parse(selector)
    with session_factory() as db:
        statements = _statements(engine, lambda: fleet_stats.snapshot(db, settings, selector=chosen))
        statements += _statements(engine, lambda: fleet_stats.campaign_totals(db))
    on_big_tables = [(sql, params) for sql, params in statements if any(t in sql for t in BIG_TABLES)]
    assert len(on_big_tables) >= 5 + 2 * 3  # and per campaign in flight: its queued targets, cancelled, commands
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        for sql, params in on_big_tables:
            if engine.dialect.name == "postgresql":
                cursor.execute("SET enable_seqscan = off")
                cursor.execute("EXPLAIN " + sql, params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                scans = [line for line in plan.splitlines() if "Seq Scan" in line]
                assert not scans, f"a sequential scan where an index should serve:\n{sql}\n{plan}"
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
                plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
                scans = [
                    line
                    for line in plan.splitlines()
                    if any(f"SCAN {t}" in line for t in BIG_TABLES) and "INDEX" not in line
                ]
                assert not scans, f"a full table scan where an index should serve:\n{sql}\n{plan}"
        raw.rollback()
        conn.execute(text("SELECT 1"))


def test_snapshot_figures(engine: Engine, settings: Settings, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    with session_factory() as db:
        snap = fleet_stats.snapshot(db, settings, offline_limit=1)
    assert snap["devices"]["online"] == 3
    assert snap["went_offline"]["count"] == 2
    assert [item["device_id"] for item in snap["went_offline"]["items"]] == ["dev_off_10m"]


def test_campaign_totals(engine: Engine, settings: Settings, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    seed_labels(session_factory)
    seed_campaigns(session_factory, settings)
    with session_factory() as db:
        totals = fleet_stats.campaign_totals(db)
    assert totals["campaigns"] == {
        "awaiting_approval": 0,
        "running": 1,
        "paused": 1,
        "halted": 0,
        "completed": 1,
        "cancelled": 0,
    }
    assert totals["targets"] == {"queued": 2, "pending": 5, "acked": 1, "failed": 1, "expired": 0, "cancelled": 0}


def _campaign(factory: sessionmaker[Session], settings: Settings, key: str, selector: str, **kw: Any) -> str:
    with factory.begin() as db:
        _, campaign = fleet.create_campaign(db, settings, idempotency_key=key, action="sync", selector=selector, **kw)
    return str(campaign["id"])


def test_campaign_totals_are_the_live_counts_of_every_campaign_in_flight_added_up(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two statements for every campaign in flight give what ``live_counts`` gives campaign by campaign:
    a wave interrupted between release batches, targets and commands cancelled by a revocation, a halted,
    a paused and an ended campaign."""
    with session_factory.begin() as db:
        for prefix in ("w", "h", "p", "e", "r"):
            seed_many(db, {"w": 30, "r": 7}.get(prefix, 6), prefix=prefix, labels={"group": prefix})
    waved = _campaign(session_factory, settings, "t-waved", "group=w", waves={"size": 10, "interval_seconds": 3600})
    monkeypatch.setattr(release, "RELEASE_BATCH", 4)
    with session_factory.begin() as db:
        assert release.step(db, waved) == "released"  # 4 of wave 1's 10: the rest waits after the cursor
    halted = _campaign(session_factory, settings, "t-halted", "group=h", waves={"size": 6, "max_failure_pct": 10})
    paused = _campaign(session_factory, settings, "t-paused", "group=p")
    ended = _campaign(session_factory, settings, "t-ended", "group=e")
    # waves of 3, 3 and a remainder of 1: wave 1 released below, 4 targets in the later waves
    remainder = _campaign(session_factory, settings, "t-rest", "group=r", waves={"size": 3, "interval_seconds": 3600})
    for campaign_id in (halted, paused, ended, remainder):
        release.advance(session_factory, campaign_id)
    ack_all(session_factory, halted, status="failed", limit=2)
    ack_all(session_factory, paused, limit=2)
    with session_factory.begin() as db:
        fleet.pause(db, paused)
        fleet.cancel(db, ended)
        pushed = db.scalars(select(FcmDispatch.device_id).where(FcmDispatch.campaign_id == waved)).first()
        later = db.scalars(
            select(CampaignTarget.device_id).where(CampaignTarget.campaign_id == waved, CampaignTarget.wave == 3)
        ).first()
        for device_id in (pushed, later):  # its command cancelled; its queued target cancelled
            revoke_device(db, str(device_id))
    release.advance(session_factory, halted)
    with session_factory() as db:
        in_flight = db.scalars(select(Campaign).where(Campaign.status.in_(fleet_stats.IN_FLIGHT))).all()
        assert sorted(c.status for c in in_flight) == ["halted", "paused", "running", "running"]
        assert next(c for c in in_flight if c.id == waved).release_cursor is not None
        assert next(c for c in in_flight if c.id == remainder).waves_released == 1
        expected = dict.fromkeys(STATUS_COUNTS, 0)
        for campaign in in_flight:
            for status, n in live_counts(db, campaign).items():
                if status in expected:
                    expected[status] += n
        totals = fleet_stats.campaign_totals(db)
        # the targets not released yet, counted row by row (live_counts works the later waves out by arithmetic)
        t = CampaignTarget
        unreleased = sum(
            db.scalar(
                select(func.count()).where(
                    t.campaign_id == c.id,
                    t.state == "queued",
                    or_(
                        t.wave > c.waves_released,
                        and_(t.wave == c.waves_released, t.device_id > c.release_cursor)
                        if c.release_cursor is not None
                        else false(),
                    ),
                )
            )
            or 0
            for c in in_flight
        )
    assert totals["targets"] == expected
    assert expected["queued"] == unreleased
    # every path of the two statements is exercised: 6 after the cursor + 19 in later waves (one cancelled),
    # and 4 after the remainder campaign's first wave
    assert expected["queued"] == 29 and expected["cancelled"] == 2 and expected["pending"] > 0
    assert expected["failed"] == 2 and expected["acked"] == 2
    assert totals["campaigns"] == {
        "awaiting_approval": 0,
        "running": 2,
        "paused": 1,
        "halted": 1,
        "completed": 0,
        "cancelled": 1,
    }


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite: one IMMEDIATE transaction, one snapshot
def test_a_campaign_created_between_the_count_and_the_rows_never_makes_more_negative(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """READ COMMITTED: the count and the rows of ``campaigns_in_flight`` see different data when a campaign
    is created between them; the count is then at least the rows and ``more`` never goes below 0."""
    with session_factory.begin() as db:
        seed_many(db, 3)
    _campaign(session_factory, settings, "t-first", "all")
    created: list[str] = []

    def create_after_the_count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not created and "count(" in statement and "FROM campaigns" in statement:
            created.append(_campaign(session_factory, settings, "t-between", "all"))

    event.listen(engine, "after_cursor_execute", create_after_the_count)
    try:
        with session_factory() as db:
            flight = fleet_stats.campaigns_in_flight(db, limit=5)
    finally:
        event.remove(engine, "after_cursor_execute", create_after_the_count)
    assert created, "the campaign was not created between the two statements"
    assert len(flight["items"]) == 2  # the rows saw it, the count did not
    assert flight["in_flight"] == 2 and flight["more"] == 0


def test_a_scoped_snapshot_counts_the_scope_only(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """The console's overview for ``operator@store=42``: devices, commands and campaigns of the scope."""
    from core.commands import dispatches
    from tests.support import fleet as two_stores

    two_stores.seed_fleet(session_factory)  # store 42: a1, a2, r1 (revoked); store 7: a3, a4
    with session_factory.begin() as db:
        for device in ("a1", "a3", "a4"):
            dispatches.create_command(db, settings, request_id=f"r-{device}", device_id=device, action="ping")
        fleet.create_campaign(db, settings, idempotency_key="k1", action="ping", selector="all", scope="store=42")
        fleet.create_campaign(db, settings, idempotency_key="k2", action="ping", selector="all")
    with session_factory() as db:
        whole = fleet_stats.snapshot(db, settings)
        scoped = fleet_stats.snapshot(db, settings, scope="store=42")
        narrowed = fleet_stats.snapshot(db, settings, scope="store=42", selector=selectors.parse("store=7"))
    assert whole["devices"]["total"] == 6 and scoped["devices"]["total"] == 3 and scoped["devices"]["revoked"] == 1
    assert narrowed["devices"]["total"] == 0
    assert whole["commands"]["pending"] == 3 and scoped["commands"]["pending"] == 1
    assert whole["campaigns"]["in_flight"] == 2 and scoped["campaigns"]["in_flight"] == 1
    assert scoped["campaigns"]["items"][0]["targeted"] == 2
