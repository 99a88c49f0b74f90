"""Part 11 at scale (``bench.bench_inventory``): 100,000 devices × 60 apps (6 M ``device_apps`` rows) on
PostgreSQL, seeded set-based (``bench.inventory_scale_seed``). Each figure beside a baseline from the same run,
baseline and code interleaved round by round (the machine is shared: the load average is noted beside each).

* **Reads** (median of rounds, the time the caller waits): the ``@app(com.acme.pos)<4200`` device listing
  page (``core.devices.listing.list_devices``, 100 rows) < 100 ms, the fleet's ``apps list`` page (the API's
  page: 100 packages) < 1 s, ``apps show com.acme.pos`` < 300 ms; each beside a raw SQL equivalent through
  psycopg2 (an ``EXISTS`` page, a ``GROUP BY package``, a ``GROUP BY version_code``). The CLI's default
  ``apps list`` (``--limit 500``: every one of the 330 packages) is reported beside the same raw scan.
* **A fleet-wide version change**: every device PATCHes ``com.acme.pos`` to 4300
  (``core.inventory.store.patch_inventory``, one transaction per device, ``workers`` processes) while one
  process stores heartbeats (``core.heartbeats.store.store_beats``, batches of 100 at ``BEAT_RATE`` beats/s,
  the statement the API's heartbeat writer runs). The PATCH workers run in bursts (``ON`` seconds, then
  ``OFF`` seconds idle): a batch's latency counts towards the change when it started in a burst, towards
  the baseline (the same heartbeats without the change) when it started between bursts. Goal: p99 < 150 ms.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from bench import inventory_scale_seed as fleet
from bench.common import Figure, pct
from core.base.settings import Settings

GROUP = "inventory at scale"
BATCH = 100
NEW_POS = 4300


def _load() -> str:
    return "load {:.1f}, {:.1f}".format(*os.getloadavg()[:2])


def _psycopg(url: str) -> Any:
    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database)
    conn.autocommit = True
    return conn


_RAW = {
    "listing": (
        "SELECT d.* FROM devices d WHERE d.revoked_at IS NULL AND EXISTS (SELECT 1 FROM device_apps a "
        "WHERE a.device_id = d.id AND a.package = 'com.acme.pos' AND a.version_code < 4200) ORDER BY d.id LIMIT 101"
    ),
    "apps list": (
        "SELECT package, count(*), count(DISTINCT version_code) FROM device_apps GROUP BY package "
        "ORDER BY package LIMIT %(limit)s"
    ),
    "apps show": (
        "SELECT version_code, max(version_name), count(*) FROM device_apps WHERE package = 'com.acme.pos' "
        "GROUP BY version_code ORDER BY version_code DESC"
    ),
}


def _reads(url: str, rounds: int) -> list[Figure]:
    from core.devices.listing import list_devices
    from core.inventory import reads
    from core.storage.engine import make_engine, make_session_factory

    settings = Settings(database_url=url, log_level="WARNING")
    engine = make_engine(url)
    factory = make_session_factory(engine, settings)
    raw = _psycopg(url)

    def ours(name: str, limit: int) -> Callable[[], object]:
        def run() -> object:
            with factory() as db:
                if name == "listing":
                    return list_devices(db, settings, selector="@app(com.acme.pos)<4200", limit=101)
                if name == "apps list":
                    return reads.fleet_apps(db, settings, limit=limit)
                return reads.package_versions(db, settings, "com.acme.pos")

        return run

    def baseline(name: str, limit: int) -> Callable[[], object]:
        def run() -> object:
            with raw.cursor() as cur:
                cur.execute(_RAW[name], {"limit": limit})
                return cur.fetchall()

        return run

    cases = [("listing", 101, 100.0), ("apps list", 101, 1000.0), ("apps show", 0, 300.0), ("apps list", 501, None)]
    samples: dict[tuple[str, int], dict[str, list[float]]] = {(n, k): {"ours": [], "raw": []} for n, k, _ in cases}
    loads: list[str] = []
    for r in range(rounds + 1):  # the first round warms the caches
        loads.append(_load())
        for name, limit, _ in cases:
            for kind, fn in (("raw", baseline(name, limit)), ("ours", ours(name, limit))):
                started = time.perf_counter()
                fn()
                if r:
                    samples[(name, limit)][kind].append((time.perf_counter() - started) * 1000)
    raw.close()
    engine.dispose()
    titles = {
        ("listing", 101): "'@app(com.acme.pos)<4200' listing page (100)",
        ("apps list", 101): "apps list, the API's page (100 packages)",
        ("apps show", 0): "apps show com.acme.pos (100,000 devices)",
        ("apps list", 501): "apps list, the CLI's default --limit 500 (all 330 packages)",
    }
    baselines = {"listing": "raw EXISTS page", "apps list": "raw GROUP BY package", "apps show": "raw GROUP BY version"}
    return [
        Figure(
            GROUP,
            f"{titles[(name, limit)]} ({loads[-1]})",
            statistics.median(samples[(name, limit)]["ours"]),
            "ms",
            baselines[name],
            statistics.median(samples[(name, limit)]["raw"]),
            below=goal,
            extra={kind: [round(v, 1) for v in samples[(name, limit)][kind]] for kind in ("ours", "raw")},
        )
        for name, limit, goal in cases
    ]


def _patcher(url: str, first: int, step: int, n: int, go: Any, stop: Any, done: Any, seconds: Any) -> None:
    """One device agent process: PATCH com.acme.pos to ``NEW_POS`` on devices ``first, first + step, ...``
    while ``go`` is set, until ``stop``."""
    from core.inventory.document import canonical_hash, check_delta
    from core.inventory.store import patch_inventory
    from core.storage.engine import make_engine, make_session_factory

    settings = Settings(database_url=url, log_level="WARNING")
    engine = make_engine(url)
    factory = make_session_factory(engine, settings)
    busy = 0.0
    for g in range(first, n, step):
        go.wait()
        if stop.is_set():
            break
        device, apps = fleet.document(g)
        new = {"version_code": NEW_POS, "version_name": "4.30"}
        apps[fleet.POS] = new
        listed = [{"package": p, **a} for p, a in apps.items()]
        body = {
            "base_hash": fleet.seed_hash(g),
            "hash": canonical_hash(device, listed),
            "apps": {"upsert": [{"package": fleet.POS, **new}], "remove": []},
        }
        started = time.perf_counter()
        with factory.begin() as db:
            patch_inventory(db, fleet.device_id(g), check_delta(body), settings)
        busy += time.perf_counter() - started
        with done.get_lock():
            done.value += 1
    with seconds.get_lock():
        seconds.value += busy
    engine.dispose()


def _beats(n: int, at: datetime, offset: int) -> list[Any]:
    from core.base import security
    from core.heartbeats.store import Beat

    return [
        Beat(
            token_hash=security.hash_secret(fleet.token(g % n)),
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
            inventory_hash=fleet.seed_hash(g % n),
        )
        for g in range(offset, offset + BATCH)
    ]


def version_change(
    url: str, n: int, *, beat_rate: float, on: float, off: float, workers: int, budget: float
) -> list[Figure]:
    """Every device PATCHes one app while heartbeats run (at most ``budget`` seconds of bursts: the rest of
    the fleet is extrapolated at the measured rate); heartbeat p99 in bursts and between them."""
    from core.heartbeats.store import store_beats
    from core.storage.engine import make_engine

    settings = Settings(database_url=url, slow_heartbeat_ms=1e9, log_level="WARNING")
    ctx = mp.get_context("spawn")
    go, stop, done, seconds = ctx.Event(), ctx.Event(), ctx.Value("i", 0), ctx.Value("d", 0.0)
    processes = [
        ctx.Process(target=_patcher, args=(url, w, workers, n, go, stop, done, seconds)) for w in range(workers)
    ]
    for p in processes:
        p.start()
    engine = make_engine(url)
    latencies: dict[bool, list[float]] = {True: [], False: []}
    loads: list[str] = []
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    interval = BATCH / beat_rate
    offset, minute, burst_seconds = 0, 0, 0.0
    phase_end, burst = time.perf_counter() + off, False
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while any(p.is_alive() for p in processes):
            now = time.perf_counter()
            if now >= phase_end:
                if burst:
                    burst_seconds += on
                if burst_seconds >= budget:
                    stop.set()
                burst = not burst
                phase_end = now + (on if burst else off)
                (go.set if burst else go.clear)()
                loads.append(_load())
            if offset >= n:
                offset, minute = 0, minute + 1
            at = today + timedelta(hours=2, minutes=minute)  # a new bucket every pass over the fleet
            beats = _beats(n, at, offset)
            started = time.perf_counter()
            store_beats(conn, beats, settings)
            latencies[burst].append((time.perf_counter() - started) * 1000)
            offset += BATCH
            time.sleep(max(0.0, started + interval - time.perf_counter()))
        if burst:
            burst_seconds += on - max(0.0, phase_end - time.perf_counter())
    for p in processes:
        p.join()
    engine.dispose()
    load = f"(loads {', '.join(loads[:: max(1, len(loads) // 4)])})"
    return [
        Figure(
            GROUP,
            f"heartbeat p99 (batches of {BATCH}, {beat_rate:,.0f} beats/s) while {n:,} devices PATCH "
            f"com.acme.pos {load}",
            pct(latencies[True], 99),
            "ms",
            "the same heartbeats between the bursts",
            pct(latencies[False], 99),
            below=150,
            extra={"batches": {"change": len(latencies[True]), "baseline": len(latencies[False])}},
        ),
        Figure(
            GROUP,
            f"the fleet-wide version change: {done.value:,} of {n:,} devices PATCHed by {workers} processes, "
            f"{done.value / burst_seconds:,.0f}/s in bursts; the whole fleet at that rate",
            n / (done.value / burst_seconds),
            "s",
            below=600,
            extra={"patch_busy_seconds": seconds.value},
        ),
    ]


def run(url: str, *, devices: int, rounds: int, **change: Any) -> list[Figure]:
    from core.storage.engine import make_engine

    engine = make_engine(url)
    fleet.seed(engine, devices)
    engine.dispose()
    figures = _reads(url, rounds)
    figures += version_change(url, devices, **change)
    return figures
