"""Part 10: staying up. A failover's write gap (median of 3), and backup / restore of 10 M heartbeats.

* **Failover.** Three pg_auto_failover formations (``tests/support/pgautofailover.py``: a monitor, a primary, a
  synchronous secondary, the monitor's checks as in docs/operations.md), one after the other. A writer
  commits a row every 20 ms through NexMDM's engine on the multi-host URL; the primary's postmaster and
  keeper get SIGKILL; the gap is the longest stretch without a commit (the writer commits every ~20 ms).
  Goal: under 30 s.
* **Backups.** One PostgreSQL database with 100,000 devices and 10 M heartbeats (20 daily partitions, as
  in part 3). ``nexmdm db backup`` against a raw ``pg_dump --format=custom`` of the same database, and
  ``nexmdm db restore`` of that file into an empty database against a raw ``pg_restore`` into another;
  in rows per second (and MB/s of the file). The same on SQLite for 1 M heartbeats against its
  ``sqlite3.Connection.backup`` in one step, in this process: informational (the command's start, the
  integrity check of the file before a restore and the audit row are fixed costs the baseline does not pay).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from bench import bench_retention
from bench.bench_http import BIN
from bench.common import PG_ADMIN_URL, Figure, pg_database, sqlite_database
from core.base.settings import normalize_database_url
from core.ops.pg_backup import conninfo, tool
from core.storage.engine import make_engine
from tests.support.pgautofailover import Formation

GROUP = "10. staying up"
GAP_GOAL_S = 30.0


def _one_gap() -> float:
    formation = Formation()
    engine = None
    stop = threading.Event()
    done: list[tuple[float, float]] = []
    try:
        formation.start()
        engine = make_engine(normalize_database_url(formation.url), pool_size=2)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE bench_writes (at timestamptz)"))

        def writer() -> None:
            assert engine is not None
            while not stop.is_set():
                started = time.monotonic()
                with contextlib.suppress(SQLAlchemyError), engine.begin() as conn:
                    conn.execute(text("INSERT INTO bench_writes VALUES (now())"))
                    done.append((started, time.monotonic()))
                time.sleep(0.02)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(2.0)
        formation.kill(formation.primary())
        killed = time.monotonic()
        deadline = killed + 90
        while not any(start > killed for start, _ in done) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        # the longest stretch without a commit: the outage (commits land every ~20 ms otherwise)
        ends = sorted(end for _, end in done)
        return max((b - a for a, b in zip(ends, ends[1:], strict=False)), default=float("inf"))
    finally:
        stop.set()
        if engine is not None:
            engine.dispose()
        formation.destroy()


def _cli(url: str, *args: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    out = subprocess.run(
        [str(BIN / "nexmdm"), "--database-url", url, "db", *args, "--yes", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, json.loads(out.stdout)


def _tool(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run(list(args), check=True, capture_output=True)
    return time.perf_counter() - started


@contextlib.contextmanager
def _empty_database() -> Iterator[str]:
    name = f"nexmdm_bench_restore_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _postgresql(tmp: Path, devices: int, days: int, per_day: int) -> tuple[list[Figure], dict[str, Any]]:
    with pg_database() as url:
        engine = make_engine(url)
        seeded = bench_retention.seed(engine, devices=devices, expired_days=days - 2, per_day=per_day)
        engine.dispose()
        rows = int(seeded["rows"])
        ours, raw = tmp / "nexmdm.backup", tmp / "raw.dump"
        info, _ = conninfo(url)
        backups: list[float] = []
        dumps: list[float] = []
        for _ in range(2):  # alternated, best of two: the first read of the table warms the page cache
            dumps.append(_tool(tool("pg_dump"), "--format=custom", f"--file={raw}", f"--dbname={info}"))
            seconds, made = _cli(url, "backup", str(ours))
            backups.append(seconds)
        backup_s, raw_dump_s = min(backups), min(dumps)
    with _empty_database() as target:
        restore_s, _ = _cli(target, "restore", str(ours))
    with _empty_database() as target:
        raw_restore_s = _tool(tool("pg_restore"), "--no-owner", f"--dbname={conninfo(target)[0]}", str(raw))
    size_mb = made["size_bytes"] / 1e6
    details = {
        "rows": rows,
        "backup_mb": round(size_mb, 1),
        "raw_dump_mb": round(raw.stat().st_size / 1e6, 1),
        "seconds": {"backup": backups, "pg_dump": dumps, "restore": restore_s, "pg_restore": raw_restore_s},
    }
    ours.unlink()
    raw.unlink()
    figures = [
        Figure(GROUP, f"nexmdm db backup, PostgreSQL, {rows:,} heartbeats", rows / backup_s, "rows/s",
               "raw pg_dump -Fc", rows / raw_dump_s, goal_ratio=0.9, extra={"mb_per_s": size_mb / backup_s}),
        Figure(GROUP, f"nexmdm db restore, PostgreSQL, {rows:,} heartbeats", rows / restore_s, "rows/s",
               "raw pg_restore", rows / raw_restore_s, goal_ratio=0.7, extra={"mb_per_s": size_mb / restore_s}),
    ]  # fmt: skip
    return figures, details


def _sqlite(tmp: Path, heartbeats: int) -> tuple[list[Figure], dict[str, Any]]:
    with sqlite_database(tmp) as url:
        path = Path(url.removeprefix("sqlite:///"))
        with sqlite3.connect(path) as conn:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO device_heartbeats (device_id, bucket_start, received_at, status, battery_pct, plugged, "
                "network_type, agent_version) SELECT 'dev-' || (i % 10000), datetime(1700000000 + i / 10000 * 10, "
                "'unixepoch'), datetime(1700000000 + i / 10000 * 10, 'unixepoch'), 'ok', i % 101, i % 2, 'wifi', '1.0' "
                "FROM n",
                (heartbeats - 1,),
            )
        backup_s, made = _cli(url, "backup", str(tmp / "sqlite.backup"))
        started = time.perf_counter()
        with sqlite3.connect(path) as src, sqlite3.connect(tmp / "raw.db") as dst:
            src.backup(dst)
        raw_s = time.perf_counter() - started
    restore_s, _ = _cli(f"sqlite:///{tmp / 'restored.db'}", "restore", str(tmp / "sqlite.backup"))
    for name in ("sqlite.backup", "raw.db", "restored.db", "restored.db-wal", "restored.db-shm"):
        (tmp / name).unlink(missing_ok=True)
    figures = [
        Figure(GROUP, f"nexmdm db backup, SQLite, {heartbeats:,} heartbeats", heartbeats / backup_s,
               "rows/s", "Connection.backup in one step", heartbeats / raw_s),
        Figure(GROUP, f"nexmdm db restore, SQLite, {heartbeats:,} heartbeats", heartbeats / restore_s,
               "rows/s", "Connection.backup in one step", heartbeats / raw_s),
    ]  # fmt: skip
    return figures, {"sqlite_bytes": made["size_bytes"], "sqlite_seconds": {"backup": backup_s, "restore": restore_s}}


def run(
    tmp: Path, *, gaps: int = 3, devices: int = 100_000, days: int = 20, per_day: int = 5, sqlite_rows: int = 1_000_000
) -> tuple[list[Figure], dict[str, Any]]:
    measured = [_one_gap() for _ in range(gaps)]
    gap = statistics.median(measured)
    figures = [
        Figure(GROUP, f"failover write gap, median of {gaps} (pg_auto_failover)", gap, "s", below=GAP_GOAL_S,
               extra={"gaps_s": [round(g, 2) for g in measured]}),
    ]  # fmt: skip
    pg_figures, details = _postgresql(tmp, devices, days, per_day)
    lite_figures, lite = _sqlite(tmp, sqlite_rows)
    return figures + pg_figures + lite_figures, details | lite | {"failover_gaps_s": measured}


def run_part(tmp: Path, *, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    """The full part, or with ``quick`` one failover and 250,000 heartbeats (a smoke run)."""
    if quick:
        return run(tmp, gaps=1, devices=10_000, days=5, per_day=5, sqlite_rows=100_000)
    return run(tmp)
