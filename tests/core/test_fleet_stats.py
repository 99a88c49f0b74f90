"""``core.fleet_stats``: every query of a ``nexmdm top`` refresh can be answered through an index.

The statements one refresh runs are captured and explained: on PostgreSQL with sequential scans
disabled (the planner still picks one when no index can serve the query), on SQLite with EXPLAIN
QUERY PLAN. Only the device-state count reads every device, by design (every state needs every device).
The same holds with a selector (``nexmdm top --selector``) and with campaigns in flight, whose targets and
commands are read through their ``campaign_id`` indexes.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from core import fleet_stats
from core.fleet import selectors
from core.settings import Settings
from tests.cli.fleet import seed_campaigns, seed_fleet, seed_labels

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
    assert totals["campaigns"] == {"running": 1, "paused": 1, "halted": 0, "completed": 1, "cancelled": 0}
    assert totals["targets"] == {"queued": 2, "pending": 5, "acked": 1, "failed": 1, "expired": 0, "cancelled": 0}
