"""Part 6: one refresh of ``nexmdm top`` (``core.ops.fleet_stats.snapshot``) on a large PostgreSQL fleet.

The goal: one refresh costs at most 50 ms of database time at 100,000 devices and 10 million heartbeats.
Database time is what PostgreSQL reports for the refresh's statements (planning plus execution, from
``EXPLAIN (ANALYZE, TIMING OFF)``); the time the CLI waits, driver and round trips included, is
reported beside it.
The fleet is seeded set-based: devices spread over online / stale / offline / never seen / revoked, a
share that went offline within the last hour, heartbeats over the last days (daily partitions) with one
beat per online device in the last minute, and an hour of commands with push and ack times (10,000 by
default: a tenth of the fleet commanded in the hour). A device's ``last_seen_at`` is its newest beat. The
seed ends with ``VACUUM (ANALYZE)``: a live fleet's autovacuum keeps the visibility map current, so counts
can be index-only (this bench's server runs without autovacuum; without the VACUUM the figures are those
of the first minute after a bulk load). Each query of the refresh is timed on its own as well, so a
regression points at its query.

Then every device gets a ``store`` label (20 stores) and a campaign to the whole fleet starts, in two
waves an hour apart (the real ``create_campaign`` and release): the first wave released (a third of it
acked, a tenth failed), the second queued. The refresh is measured right after that (not vacuumed: the
minute before autovacuum's next pass, reported without a goal), then, after a VACUUM, with that campaign in flight
(``top`` shows its counts: one ``GROUP BY`` on its ``campaign_id`` range), and once more narrowed by a
selector (``store=7``: device states, heartbeats and went-offline of 5 % of the fleet).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text

from bench.common import Figure, median, pct, pg_database
from core import campaigns as fleet
from core.base.settings import Settings
from core.commands.push import queue_stats
from core.devices import selectors
from core.heartbeats import partitions
from core.ops import fleet_stats
from core.profiles import compliance
from core.storage.engine import make_engine, make_session_factory

GOAL_MS = 50.0


def seed(engine: Any, *, devices: int, heartbeats: int, commands: int) -> dict[str, Any]:
    """Devices: 70 % online, 10 % stale, 12 % offline (a third of them within the last hour), 3 % never
    seen, 5 % revoked. Heartbeats: ``heartbeats`` rows over the last days, 10-second buckets."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    days_back = max(1, min(25, heartbeats // (devices * 20) or 1))
    per_day = max(1, heartbeats // (devices * days_back))
    today = now.date()
    with engine.begin() as conn:
        partitions.create_partitions(conn, [today - timedelta(days=i) for i in range(days_back + 1)])
    for back in range(days_back, 0, -1):
        day = datetime.combine(today - timedelta(days=back), datetime.min.time(), UTC)
        slots = 8640 // per_day
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO device_heartbeats (device_id, bucket_start, received_at, status, battery_pct, "
                    "plugged, network_type, agent_version) "
                    "SELECT 'dev-' || lpad(d::text, 6, '0'), ts, ts, 'ok', d % 101, d % 2 = 0, 'wifi', '1.0' "
                    "FROM generate_series(0, :devices - 1) d, generate_series(0, :per_day - 1) k, "
                    "LATERAL (SELECT CAST(:day AS timestamptz) "
                    "+ make_interval(secs => (k * :slots + d % :slots) * 10)) t(ts)"
                ),
                {"devices": devices, "per_day": per_day, "slots": slots, "day": day},
            )
    now = datetime.now(UTC)  # the bulk insert took a while: the fleet's times are relative to now
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO devices (id, enrolled_at, model, last_seen_at, revoked_at)
                SELECT 'dev-' || lpad(d::text, 6, '0'), :now - interval '30 days', 'bench',
                       CASE WHEN d % 100 < 70 THEN :now - make_interval(secs => d % 60)
                            WHEN d % 100 < 80 THEN :now - make_interval(secs => 400 + d % 3000)
                            WHEN d % 100 < 84 THEN :now - make_interval(secs => 3700 + d % 3500)
                            WHEN d % 100 < 92 THEN :now - make_interval(secs => 8000 + d % 80000)
                            WHEN d % 100 < 95 THEN NULL
                            ELSE :now - interval '3 days' END,
                       CASE WHEN d % 100 >= 95 THEN :now - interval '2 days' END
                FROM generate_series(0, :n - 1) d
                """
            ),
            {"n": devices, "now": now},
        )
        # today: the online devices' beats of the last minute (and nothing later than now)
        conn.execute(
            text(
                "INSERT INTO device_heartbeats (device_id, bucket_start, received_at, status, battery_pct, plugged, "
                "network_type, agent_version) "
                "SELECT 'dev-' || lpad(d::text, 6, '0'), ts, ts, 'ok', 50, true, 'wifi', '1.0' "
                "FROM generate_series(0, :n - 1) d, "
                "LATERAL (SELECT date_bin('10 seconds', CAST(:now AS timestamptz) - make_interval(secs => d % 60), "
                "TIMESTAMPTZ '2000-01-01')) t(ts) WHERE d % 100 < 70 ON CONFLICT DO NOTHING"
            ),
            {"n": devices, "now": now},
        )
        conn.execute(
            text(
                """
                INSERT INTO fcm_dispatches (request_id, device_id, action, payload_hash, status, fcm_status,
                                            replay_count, attempts, created_at, sent_at, acked_at)
                SELECT 'bench-' || c, 'dev-' || lpad((c % :devices)::text, 6, '0'), 'ping', 'x',
                       CASE WHEN c % 100 < 85 THEN 'acked' WHEN c % 100 < 88 THEN 'failed'
                            WHEN c % 100 < 90 THEN 'expired' ELSE 'pending' END,
                       CASE WHEN c % 100 < 99 THEN 'sent' ELSE 'pending' END, 0, 1,
                       ts, CASE WHEN c % 100 < 99 THEN ts + make_interval(secs => 0.2 + (c % 50) / 10.0) END,
                       CASE WHEN c % 100 < 85 THEN ts + make_interval(secs => 2 + c % 30) END
                FROM generate_series(0, :n - 1) c,
                     LATERAL (SELECT CAST(:now AS timestamptz) - make_interval(secs => 5 + c % 3500)) t(ts)
                """
            ),
            {"n": commands, "devices": devices, "now": now},
        )
    with engine.connect() as conn:  # what autovacuum does on a live fleet (this bench's server runs without it)
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM (ANALYZE)"))
        rows = conn.execute(text("SELECT count(*) FROM device_heartbeats")).scalar_one()
    return {"devices": devices, "heartbeats": rows, "commands": commands, "seed_s": time.perf_counter() - started}


#: the selector of the narrowed refresh: one store of 20
SELECTOR = "store=7"
STORES = 20


def start_campaign(engine: Any, factory: Any, settings: Settings) -> dict[str, Any]:
    """Labels on every device, then a campaign to all of them: wave 1 of 2 released and partly done."""
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO device_labels (device_id, key, value) "
                "SELECT id, 'store', (abs(hashtext(id)) % :stores)::text FROM devices"
            ),
            {"stores": STORES},
        )
    with factory.begin() as db:
        _, campaign = fleet.create_campaign(
            db, settings, idempotency_key="bench-top", action="sync", selector="all",
            waves={"percent": 50, "interval_seconds": 3600},
        )  # fmt: skip
    fleet.advance(factory, campaign["id"])  # wave 1; wave 2 waits an hour
    with engine.begin() as conn:
        params = {"campaign": campaign["id"]}
        for status, where in (("acked", "id % 3 = 0"), ("failed", "id % 10 = 1")):
            conn.execute(
                text(
                    f"UPDATE fcm_dispatches SET status = '{status}', acked_at = now(), finished_at = now() "
                    f"WHERE campaign_id = :campaign AND {where}"
                ),
                params,
            )
    with engine.connect() as conn:  # statistics, as autovacuum would gather them; no VACUUM: a wave just went out
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("ANALYZE device_labels, campaigns, campaign_targets, fcm_dispatches")
        )
    return {"id": campaign["id"], "targeted": campaign["targeted"], "seconds": time.perf_counter() - started}


def _one_refresh(factory: Any, settings: Settings, selector: Any = None) -> dict[str, Any]:
    with factory() as db:
        return fleet_stats.snapshot(db, settings, offline_limit=20, selector=selector)


def _statements(engine: Any, run: Any) -> list[tuple[str, Any]]:
    """The SELECTs ``run`` sends to the database, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


def _database_ms(engine: Any, statements: list[tuple[str, Any]]) -> float:
    """Planning plus execution time of every statement, as PostgreSQL reports it (EXPLAIN ANALYZE without
    per-node timing): the database's own time, without the network, the driver or Python."""
    total = 0.0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for sql, params in statements:
            cursor.execute("EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0][0]
            total += plan["Planning Time"] + plan["Execution Time"]
        raw.rollback()
    finally:
        raw.close()
    return total


def _measure(engine: Any, factory: Any, settings: Settings, rounds: int, selector: Any = None) -> dict[str, Any]:
    """Database time (EXPLAIN ANALYZE of the refresh's statements) and the CLI's wait, over ``rounds``, and
    the CLI's wait of each query on its own."""
    queries = {
        "device_counts": lambda db: fleet_stats.device_counts(db, settings, selector=selector),
        "heartbeat_rate": lambda db: fleet_stats.heartbeat_rate(db, settings, selector=selector),
        "command_counts": fleet_stats.command_counts,
        "push_queue": queue_stats,
        "latencies": fleet_stats.latencies,
        "went_offline": lambda db: fleet_stats.went_offline(db, settings, limit=20, selector=selector),
        "campaigns": fleet_stats.campaigns_in_flight,
        # what the gauge and ``nexmdm compliance`` run (a refresh of ``top`` counts it in device_counts' pass)
        "compliance_summary": lambda db: compliance.summary(db, settings, selector=selector),
    }
    statements = _statements(engine, lambda: _one_refresh(factory, settings, selector))
    db_time = [_database_ms(engine, statements) for _ in range(rounds)]
    per_query: dict[str, list[float]] = {name: [] for name in queries}
    refresh: list[float] = []
    for _ in range(rounds):
        with factory() as db:
            t0 = time.perf_counter()
            fleet_stats.snapshot(db, settings, offline_limit=20, selector=selector)
            refresh.append((time.perf_counter() - t0) * 1000)
            for name, query in queries.items():
                t1 = time.perf_counter()
                query(db)
                per_query[name].append((time.perf_counter() - t1) * 1000)
    snap = _one_refresh(factory, settings, selector)
    return {
        "database_ms": db_time,
        "refresh_ms": refresh,
        "statements": len(statements),
        "per_query_median_ms": {name: round(median(v), 2) for name, v in per_query.items()},
        "devices": snap["devices"],
        "went_offline": snap["went_offline"]["count"],
        "heartbeats_last_minute": snap["heartbeats"]["stored"],
        "campaigns": [c["counts"] for c in snap["campaigns"]["items"]],
    }


def _figures(measured: dict[str, Any], what: str) -> list[Figure]:
    db_time = measured["database_ms"]
    return [
        Figure("top", f"database time of {what}, median", median(db_time), "ms", below=GOAL_MS),
        Figure("top", f"database time of {what}, p95", pct(db_time, 95), "ms", below=GOAL_MS),
        Figure("top", f"{what} as the CLI sees it (with the driver), median", median(measured["refresh_ms"]), "ms"),
    ]


def run(
    *, devices: int = 100_000, heartbeats: int = 10_000_000, commands: int = 10_000, rounds: int = 20
) -> tuple[list[Figure], dict[str, Any]]:
    with pg_database("nexmdm_bench_top") as url:
        settings = Settings(database_url=url)  # (its campaign limit is PostgreSQL's)
        engine = make_engine(url)
        seeded = seed(engine, devices=devices, heartbeats=heartbeats, commands=commands)
        factory = make_session_factory(engine, settings)
        plain = _measure(engine, factory, settings, rounds)
        campaign = start_campaign(engine, factory, settings)
        fresh = _measure(engine, factory, settings, rounds)  # the wave just went out: not vacuumed yet
        with engine.connect() as conn:  # autovacuum's next pass (a minute later on a live fleet)
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM (ANALYZE) devices, device_labels, campaigns, campaign_targets, fcm_dispatches")
            )
        busy = _measure(engine, factory, settings, rounds)
        narrowed = _measure(engine, factory, settings, rounds, selectors.parse(SELECTOR))
        engine.dispose()
    label = f"{seeded['devices']:,} devices, {seeded['heartbeats']:,} heartbeats"
    figures = [
        *_figures(plain, f"one refresh ({label})"),
        Figure("top", "one refresh as the CLI sees it, fastest (a quiet moment)", min(plain["refresh_ms"]), "ms"),
        *_figures(busy, f"one refresh with a campaign to {campaign['targeted']:,} devices in flight"),
        Figure("top", "the same right after the wave's release, before autovacuum, median",
               median(fresh["database_ms"]), "ms"),
        *_figures(narrowed, f"one refresh --selector {SELECTOR} (campaign in flight)"),
    ]  # fmt: skip
    details = {
        "seed": seeded,
        "campaign": campaign,
        "plain": plain,
        "campaign_just_released": fresh,
        "campaign_in_flight": busy,
        "selector": narrowed,
    }
    return figures, details
