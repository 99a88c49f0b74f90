"""Part 11: inventory on PostgreSQL. The heartbeat's one statement with ``inventory_hash`` against the same
statement without it, and inventory PUTs against a raw-driver floor of the same writes; same run, same DB.

* **Heartbeat.** ``core.heartbeats.store.store_beats`` (the statement the API's heartbeat writer runs) over
  a fleet whose devices hold an inventory: batches of beats with the held hash (steady state: nothing
  wanted) and, alternating round by round, the same beats without it. Goal: ≥ 0.9×. Likewise the beats of
  devices that hold an effective profile (its hash in the answer) against devices without one (issue 24).
* **PUT.** ``core.inventory.store.put_inventory`` (checks, hash, lock, diff, change rows; one transaction
  per report) for devices reporting 60 apps for the first time, against psycopg2 writing the same rows
  (the inventory row, 60 apps with ``execute_values``, 60 change rows, the device's hash) in one
  transaction per device. Goal: ≥ 0.5×. Measured beside the path as it was before its writes became one
  statement (``_per_kind``), the three interleaved round by round.
* **At scale** (``bench.bench_inventory_scale``): 100,000 devices × 60 apps; the ``@app(...)<N`` page,
  ``apps list`` and ``apps show`` beside raw SQL, and a fleet-wide version change under heartbeats.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
from psycopg2.extras import execute_values
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from bench import bench_inventory_scale
from bench.common import Figure, pg_database
from core.base import security
from core.base.settings import Settings
from core.heartbeats.store import Beat, store_beats
from core.inventory import store
from core.inventory.document import canonical_hash, check_report
from core.models import Device
from core.storage.engine import make_engine, make_session_factory

GROUP = "inventory"
APPS = 60
BATCH = 100
#: partitions exist from today to a week ahead: every round is a new bucket of today
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _document(i: int) -> dict[str, Any]:
    device = {"manufacturer": "samsung", "model": "Galaxy A10", "api_level": 30, "security_patch": "2026-05-01"}
    apps = [
        {"package": f"com.vendor{j % 7}.app{j}", "version_code": 100 + (i + j) % 5, "version_name": "1.0"}
        for j in range(APPS)
    ]
    return {"hash": canonical_hash(device, apps), "device": device, "apps": apps}


def _seed(url: str, n: int, prefix: str = "inv", effective_hash: str | None = None) -> list[str]:
    tokens = [f"nxd_bench_{prefix}_{i:06d}" for i in range(n)]
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(Device),
            [
                {
                    "id": f"{prefix}_{i:06d}",
                    "device_token_hash": security.hash_secret(token),
                    "enrolled_at": TODAY,
                    "inventory_hash": "a" * 64,
                    "effective_hash": effective_hash,
                    "profile_stale": False,
                }
                for i, token in enumerate(tokens)
            ],
        )
    engine.dispose()
    return tokens


def _beats(tokens: list[str], at: datetime, held: str | None, settings: Settings) -> list[Beat]:
    return [
        Beat(
            token_hash=security.hash_secret(token),
            claimed=None,
            received_at=at,
            bucket_start=at,
            status="ok",
            battery_pct=50,
            plugged=False,
            network_type="wifi",
            agent_version="bench-1.0",
            fcm_token=None,
            agent_version_key=None,
            inventory_hash=held,
        )
        for token in tokens
    ]


def heartbeats(url: str, devices: int, rounds: int) -> Figure:
    settings = Settings(database_url=url, slow_heartbeat_ms=1e9, log_level="WARNING")
    tokens = _seed(url, devices)
    engine = make_engine(url)
    elapsed = {"with": 0.0, "without": 0.0}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for r in range(rounds * 2 + 1):
            mode = "with" if r % 2 else "without"
            at = TODAY + timedelta(hours=1, seconds=10 * r)
            beats = _beats(tokens, at, "a" * 64 if mode == "with" else None, settings)
            started = time.perf_counter()
            for k in range(0, len(beats), BATCH):
                store_beats(conn, beats[k : k + BATCH], settings)
            if r:  # the first round warms the caches (partitions, plans)
                elapsed[mode] += time.perf_counter() - started
    engine.dispose()
    rate = {mode: devices * rounds / seconds for mode, seconds in elapsed.items()}
    return Figure(
        GROUP,
        f"heartbeats with inventory_hash ({devices:,} devices, batches of {BATCH})",
        rate["with"],
        "beats/s",
        "the same beats without it",
        rate["without"],
        goal_ratio=0.9,
    )


def profile_heartbeats(url: str, devices: int, rounds: int) -> Figure:
    """The heartbeat of a fleet whose devices hold an effective profile (its hash in every answer) against
    the same beats of a fleet of the same size without one; rounds alternate between the two fleets."""
    settings = Settings(database_url=url, slow_heartbeat_ms=1e9, log_level="WARNING")
    fleets = {"with": _seed(url, devices, "prof", "b" * 64), "without": _seed(url, devices, "bare")}
    engine = make_engine(url)
    elapsed = {"with": 0.0, "without": 0.0}
    answered: set[Any] = set()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for r in range(rounds * 2 + 2):
            mode = "with" if r % 2 else "without"
            at = TODAY + timedelta(hours=2, seconds=10 * r)
            beats = _beats(fleets[mode], at, "a" * 64, settings)
            started = time.perf_counter()
            for k in range(0, len(beats), BATCH):
                outcomes = store_beats(conn, beats[k : k + BATCH], settings)
                answered.update(o.get("profile") if isinstance(o, dict) else o for o in outcomes)
            if r > 1:  # the first round of each warms the caches (partitions, plans)
                elapsed[mode] += time.perf_counter() - started
    engine.dispose()
    assert answered == {"b" * 64, None}, answered  # the hash is in the answers of the fleet that holds it
    rate = {mode: devices * rounds / seconds for mode, seconds in elapsed.items()}
    return Figure(
        GROUP,
        f"heartbeats answering a profile hash ({devices:,} devices, batches of {BATCH})",
        rate["with"],
        "beats/s",
        "the same beats of devices without a profile",
        rate["without"],
        goal_ratio=0.9,
    )


def _floor(url: str, ids: list[str], first: int) -> float:
    """psycopg2 writing the same rows as a first report of 60 apps, one transaction per device: seconds."""
    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database)
    now = datetime.now(UTC)
    started = time.perf_counter()
    with conn.cursor() as cur:
        for i, device_id in enumerate(ids, first):
            document = _document(i)
            cur.execute(
                "INSERT INTO device_inventory (device_id, hash, manufacturer, model, api_level, security_patch, "
                "serial_withheld, app_count, reported_at, updated_at) VALUES (%s, %s, 'samsung', 'Galaxy A10', 30, "
                "'2026-05-01', false, %s, %s, %s)",
                (device_id, document["hash"], APPS, now, now),
            )
            execute_values(
                cur,
                "INSERT INTO device_apps (device_id, package, version_code, version_name) VALUES %s",
                [(device_id, a["package"], a["version_code"], a["version_name"]) for a in document["apps"]],
            )
            execute_values(
                cur,
                "INSERT INTO device_app_changes (device_id, package, change, to_version_code, at) VALUES %s",
                [(device_id, a["package"], "installed", a["version_code"], now) for a in document["apps"]],
            )
            cur.execute("UPDATE devices SET inventory_hash = %s WHERE id = %s", (document["hash"], device_id))
            conn.commit()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def _per_kind(db: Any, device_id: str, values: Any, upserts: Any, changes: Any, removed: Any, *, held: bool) -> None:
    """The PUT path before its writes became one statement: a statement per kind of row, the app upsert an
    executemany (one round trip per app). Measured beside the current path in the same run."""
    store._apply(db, device_id, values, True if held else None, upserts, changes, removed, inserted=True)


def _ours(factory: Any, settings: Settings, ids: list[str], first: int, *, before: bool) -> float:
    current = store._apply_postgresql
    store._apply_postgresql = _per_kind if before else current  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        for i, device_id in enumerate(ids, first):
            with factory.begin() as db:
                store.put_inventory(db, device_id, check_report(_document(i)), settings)
        return time.perf_counter() - started
    finally:
        store._apply_postgresql = current  # type: ignore[assignment]


def puts(url: str, devices: int, rounds: int = 4) -> list[Figure]:
    """The floor, the PUT path before and after, interleaved round by round on new devices each."""
    settings = Settings(database_url=url, log_level="WARNING")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Device), [{"id": f"put_{i:06d}", "enrolled_at": TODAY} for i in range(3 * devices)])
    factory = make_session_factory(engine, settings)
    seconds = {"floor": 0.0, "before": 0.0, "after": 0.0}
    per_round = devices // rounds
    for r in range(rounds):
        for k, kind in enumerate(seconds):
            first = (k * rounds + r) * per_round
            ids = [f"put_{i:06d}" for i in range(first, first + per_round)]
            if kind == "floor":
                seconds[kind] += _floor(url, ids, first)
            else:
                seconds[kind] += _ours(factory, settings, ids, first, before=kind == "before")
    engine.dispose()
    n = per_round * rounds
    load = "load {:.1f}, {:.1f}".format(*os.getloadavg()[:2])
    return [
        Figure(
            GROUP,
            f"inventory PUTs of {APPS} apps (first report, {n:,} devices; {label}) ({load})",
            n / seconds[kind],
            "reports/s",
            "psycopg2, the same rows",
            n / seconds["floor"],
            goal_ratio=0.5,
        )
        for kind, label in (("before", "before: a statement per kind"), ("after", "one statement"))
    ]


def run(
    *, devices: int = 20_000, rounds: int = 3, put_devices: int = 2_000, scale: dict[str, Any] | None = None
) -> tuple[list[Figure], object]:
    with pg_database("nexmdm_bench_inventory") as url:
        figures = [heartbeats(url, devices, rounds), profile_heartbeats(url, devices, rounds), *puts(url, put_devices)]
    with pg_database("nexmdm_bench_inventory_scale") as url:
        figures += bench_inventory_scale.run(url, **(scale or SCALE))
    return figures, None


#: the scale part: 100,000 devices × 60 apps; the change's bursts long enough to reach a steady state
SCALE: dict[str, Any] = {"devices": 100_000, "rounds": 5, "beat_rate": 2_000.0, "on": 20.0, "off": 6.0}
SCALE |= {"workers": 6, "budget": 300.0}
QUICK_SCALE: dict[str, Any] = {"devices": 2_000, "rounds": 2, "beat_rate": 1_000.0, "on": 2.0, "off": 1.0}
QUICK_SCALE |= {"workers": 2, "budget": 60.0}


def run_part(*, quick: bool) -> tuple[list[Figure], object]:
    """``make bench``'s part 11 (``--quick``: a smoke run)."""
    return run(devices=2_000, rounds=2, put_devices=200, scale=QUICK_SCALE) if quick else run()
