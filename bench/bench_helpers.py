"""Part 1: the persistence helpers against the raw-driver single statement (the floor), same run, same DB."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from bench.common import Figure, pct, pg_database, rate, sqlite_database
from core import db_utils
from core.base.settings import Settings
from core.base.validation import payload_hash
from core.models import Device
from core.storage.engine import make_engine, make_session_factory

DEVICES = 100
# partitions exist from today to a week ahead: stay inside them (the floor cannot create one)
BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
HASH = payload_hash(None)
BEAT = {"status": "ok", "battery_pct": 50, "plugged": True, "network_type": "wifi", "agent_version": "1.0"}

HEARTBEAT_SQL = (
    "INSERT INTO device_heartbeats (device_id, bucket_start, received_at, status, battery_pct, plugged, "
    "network_type, agent_version) VALUES ({p}, {p}, {p}, 'ok', 50, {t}, 'wifi', '1.0') ON CONFLICT DO NOTHING"
)
DISPATCH_SQL = (
    "INSERT INTO fcm_dispatches (request_id, device_id, action, payload_hash, status, fcm_status, replay_count, "
    "attempts, created_at) VALUES ({p}, {p}, 'ping', {p}, 'pending', 'pending', 0, 0, {p}) "
    "ON CONFLICT (request_id) DO NOTHING"
)


def _moment(i: int, offset_days: int) -> datetime:
    return BASE + timedelta(days=offset_days, seconds=10 * (i // DEVICES))


def _seed_devices(url: str, settings: Settings) -> None:
    engine = make_engine(url)
    with make_session_factory(engine, settings).begin() as db:
        db.add_all(Device(id=f"bench_{d:03d}") for d in range(DEVICES))
    engine.dispose()


def _sqlite_floor(path: str, n: int, offset_days: int, sql: str, row) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    statement = sql.format(p="?", t="1")
    ops, _ = rate(n, lambda i: conn.execute(statement, row(i, offset_days, "sqlite")))
    conn.close()
    return ops


def _pg_floor(url: str, n: int, offset_days: int, sql: str, row) -> float:
    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database)
    conn.autocommit = True
    cur = conn.cursor()
    statement = sql.format(p="%s", t="true")
    ops, _ = rate(n, lambda i: cur.execute(statement, row(i, offset_days, "pg")))
    conn.close()
    return ops


def _ts(moment: datetime, kind: str) -> object:
    # SQLite rows use the same spelling as core.storage.types.UTCDateTime (naive UTC text)
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") if kind == "sqlite" else moment


def _heartbeat_row(i: int, offset_days: int, kind: str) -> tuple:
    moment = _moment(i, offset_days)
    return (f"bench_{i % DEVICES:03d}", _ts(moment, kind), _ts(moment, kind))


def _dispatch_row(i: int, offset_days: int, kind: str) -> tuple:
    return (f"raw_{offset_days}_{i}", f"bench_{i % DEVICES:03d}", HASH, _ts(_moment(i, 0), kind))


def measure(url: str, kind: str, n: int) -> list[Figure]:
    settings = Settings(database_url=url, slow_heartbeat_ms=1e9)
    _seed_devices(url, settings)
    floor = _sqlite_floor if kind == "sqlite" else _pg_floor
    target = make_url(url).database if kind == "sqlite" else url
    hb_floor = floor(target, n, 0, HEARTBEAT_SQL, _heartbeat_row)
    dp_floor = floor(target, n, 0, DISPATCH_SQL, _dispatch_row)

    engine = make_engine(url)
    per_tx = make_session_factory(engine, settings)
    # its own engine: switching a pooled connection's isolation level per checkout costs round trips
    autocommit_engine = make_engine(url, isolation_level="AUTOCOMMIT") if kind == "postgresql" else engine
    autocommit = make_session_factory(autocommit_engine, settings)
    figures = []
    for label, factory, days in (("transaction per call", per_tx, 1), ("autocommit session", autocommit, 2)):

        def beat(i: int, factory=factory, days=days) -> None:
            with factory.begin() as db:
                db_utils.record_heartbeat_with_bucketing(
                    db, device_id=f"bench_{i % DEVICES:03d}", heartbeat_data=BEAT, received_at=_moment(i, days)
                )

        def dispatch(i: int, factory=factory, days=days) -> None:
            with factory.begin() as db:
                db_utils.record_fcm_dispatch(
                    db,
                    request_id=f"h_{days}_{i}",
                    device_id=f"bench_{i % DEVICES:03d}",
                    action="ping",
                    payload_hash=HASH,
                )

        hb, hb_lat = rate(n, beat)
        dp, dp_lat = rate(n, dispatch)
        goal = 0.5 if label == "autocommit session" else None
        figures += [
            Figure(
                f"helpers/{kind}",
                f"record_heartbeat_with_bucketing ({label})",
                hb,
                "ops/s",
                "raw driver INSERT ... ON CONFLICT",
                hb_floor,
                goal,
                {"p99_ms": pct(hb_lat, 99)},
            ),
            Figure(
                f"helpers/{kind}",
                f"record_fcm_dispatch ({label})",
                dp,
                "ops/s",
                "raw driver INSERT ... ON CONFLICT",
                dp_floor,
                goal,
                {"p99_ms": pct(dp_lat, 99)},
            ),
        ]
    engine.dispose()
    autocommit_engine.dispose()
    return figures


def run(tmp: Path, *, n_pg: int = 3000, n_sqlite: int = 5000) -> list[Figure]:
    figures = []
    with pg_database() as url:
        figures += measure(url, "postgresql", n_pg)
    with sqlite_database(tmp) as url:
        figures += measure(url, "sqlite", n_sqlite)
    return figures
