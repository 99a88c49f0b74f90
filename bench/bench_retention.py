"""Part 3: retention of 10 M expired heartbeats against a single ``DELETE``, with reads at that scale.

One PostgreSQL database gets 100,000 devices and, by default, 20 expired days of 500,000 heartbeats each
(10 M rows), a boundary day that is half expired and a recent day. Before the cleanup, the admin reads
are timed at that size (``GET /v1/devices`` pages, ``nexmdm devices list``, one device's heartbeats,
with the query plan). Then ``cleanup_old_heartbeats`` runs while a writer keeps storing heartbeats (its
errors and latencies are reported). The baseline is one ``DELETE`` of the same rows from an unpartitioned
copy of the same table with the same indexes, in the same run.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import text

from bench.bench_http import BIN, ROOT
from bench.common import Figure, pct, pg_database
from core.access import keys as admin_keys
from core.base import security
from core.base.settings import Settings
from core.db_utils import cleanup_old_heartbeats
from core.heartbeats import partitions
from core.heartbeats.store import prepare_beat, store_beats
from core.storage.engine import make_engine, make_session_factory
from nexmdm_api import create_app

RETENTION_DAYS = 30
READ_GOAL_S = 1.0
HEARTBEATS_GOAL_MS = 50.0
CLEANUP_GOAL_S = 5.0
WRITERS = 200  # devices with a token, beating during the cleanup


def _device(i: int) -> str:
    return f"dev-{i:06d}"


def _insert_day(conn: Any, day: datetime, devices: int, per_day: int) -> None:
    """``devices`` x ``per_day`` heartbeats on ``day``, spread over the day on 10-second buckets."""
    slots = 8640 // per_day
    conn.execute(
        text(
            "INSERT INTO device_heartbeats (device_id, bucket_start, received_at, status, battery_pct, plugged, "
            "network_type, agent_version) "
            "SELECT 'dev-' || lpad(d::text, 6, '0'), ts, ts, 'ok', d % 101, d % 2 = 0, 'wifi', '1.0' "
            "FROM generate_series(0, :devices - 1) d, generate_series(0, :per_day - 1) k, "
            "LATERAL (SELECT CAST(:day AS timestamptz) + make_interval(secs => (k * :slots + d % :slots) * 10)) t(ts)"
        ),
        {"devices": devices, "per_day": per_day, "slots": slots, "day": day},
    )


def seed(engine: Any, *, devices: int, expired_days: int, per_day: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    cutoff = now - timedelta(days=RETENTION_DAYS)
    boundary = cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
    days = [boundary - timedelta(days=i) for i in range(expired_days, 0, -1)] + [boundary, today]
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO devices (id, enrolled_at, model) SELECT 'dev-' || lpad(d::text, 6, '0'), now(), 'bench' "
                "FROM generate_series(0, :n - 1) d"
            ),
            {"n": devices},
        )
        partitions.create_partitions(conn, [d.date() for d in days])
    for day in days:
        with engine.begin() as conn:
            _insert_day(conn, day, devices, per_day)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE device_heartbeats"))
        total = conn.execute(text("SELECT count(*) FROM device_heartbeats")).scalar_one()
        expired = conn.execute(
            text("SELECT count(*) FROM device_heartbeats WHERE bucket_start < :c"), {"c": cutoff}
        ).scalar_one()
    return {"rows": total, "expired": expired, "seed_s": time.perf_counter() - started, "cutoff": cutoff}


def reads(url: str, settings: Settings, devices: int) -> tuple[list[Figure], dict[str, Any]]:
    engine = make_engine(url)
    factory = make_session_factory(engine, settings)
    with factory.begin() as db:
        admin, _ = admin_keys.create_admin_key(db, name="bench")
    headers = {"Authorization": f"Bearer {admin}"}
    details: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:

        def timed(path: str) -> float:
            t0 = time.perf_counter()
            response = client.get(path, headers=headers)
            assert response.status_code == 200, response.text
            return time.perf_counter() - t0

        timed("/v1/devices?limit=100")  # warm-up
        first = [timed("/v1/devices?limit=100") for _ in range(10)]
        deep = [timed(f"/v1/devices?limit=100&cursor={_device(devices - 500)}") for _ in range(10)]
        offline = [timed("/v1/devices?limit=100&offline=true") for _ in range(5)]
        ids = [_device(i) for i in range(0, devices, max(1, devices // 50))]
        timed(f"/v1/devices/{ids[0]}/heartbeats?limit=50")
        beats = [timed(f"/v1/devices/{d}/heartbeats?limit=50") for d in ids]
    with engine.connect() as conn:
        plan = (
            conn.execute(
                text(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) SELECT * FROM device_heartbeats WHERE device_id = :d "
                    "ORDER BY bucket_start DESC LIMIT 51"
                ),
                {"d": ids[len(ids) // 2]},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    env = os.environ | {"NEXMDM_DATABASE_URL": url}
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "nexmdm"), "--help"], cwd=ROOT, capture_output=True, env=env, check=True)
    start_s = time.perf_counter() - t0  # the baseline: starting the CLI at all
    t0 = time.perf_counter()
    cli = subprocess.run(
        [str(BIN / "nexmdm"), "devices", "list", "--json"], cwd=ROOT, capture_output=True, env=env, check=True
    )
    cli_s = time.perf_counter() - t0
    details.update(
        devices_first_page_ms=[round(x * 1000, 1) for x in first],
        devices_deep_page_ms=[round(x * 1000, 1) for x in deep],
        devices_offline_page_ms=[round(x * 1000, 1) for x in offline],
        heartbeats_ms=[round(x * 1000, 1) for x in beats],
        heartbeats_plan=plan,
        cli_devices_list_s=cli_s,
        cli_start_s=start_s,
        cli_devices_listed=cli.stdout.count(b'"device_id"'),
    )
    worst_page = max(first + deep + offline)
    figures = [
        Figure(
            "reads/postgresql",
            f"GET /v1/devices, 100 per page, {devices:,} devices (slowest page)",
            worst_page,
            "s",
            below=READ_GOAL_S,
            extra={"median_s": statistics.median(first + deep)},
        ),
        Figure(
            "reads/postgresql",
            f"nexmdm devices list (500 rows, process start included), {devices:,} devices",
            cli_s,
            "s",
            "nexmdm --help (process start)",
            start_s,
            below=READ_GOAL_S,
        ),
        Figure(
            "reads/postgresql",
            "GET /v1/devices/{id}/heartbeats, 50 rows (p95 over 50 devices)",
            pct(beats, 95) * 1000,
            "ms",
            below=HEARTBEATS_GOAL_MS,
            extra={"median_ms": statistics.median(beats) * 1000},
        ),
    ]
    return figures, details


class _Steps(logging.Handler):
    """Collects the cleanup's progress lines: partitions dropped, and when the batched trim began."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.partitions = self.partition_rows = self.batches = 0
        self.first_batch: float | None = None
        self.logger = logging.getLogger("nexmdm.cleanup")

    def __enter__(self) -> _Steps:
        self.previous = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.previous)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("cleanup_partition "):
            self.partitions += 1
            self.partition_rows += int(message.split("deleted=")[1].split()[0])
        elif message.startswith("cleanup_batch entity=device_heartbeats"):
            self.batches += 1
            if self.first_batch is None:
                self.first_batch = time.perf_counter()


class Ingest(threading.Thread):
    """Store beats for ``WRITERS`` devices in batches, as the API's writer does, until stopped."""

    def __init__(self, url: str, settings: Settings, tokens: list[str]) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(url, isolation_level="AUTOCOMMIT")
        self.settings, self.tokens = settings, tokens
        self.stop_at: float | None = None
        self.latencies: list[tuple[float, float]] = []  # (when, ms)
        self.errors: list[str] = []
        self.stored = 0

    def run(self) -> None:
        with self.engine.connect() as conn:
            while self.stop_at is None or time.perf_counter() < self.stop_at:
                beats = [prepare_beat(t, {"status": "ok"}, self.settings) for t in self.tokens[:20]]
                self.tokens = self.tokens[20:] + self.tokens[:20]
                t0 = time.perf_counter()
                try:
                    outcomes = store_beats(conn, beats, self.settings)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    self.errors.append(type(exc).__name__)
                    conn.rollback()
                    continue
                self.latencies.append((t0, (time.perf_counter() - t0) * 1000))
                self.errors += [type(o).__name__ for o in outcomes if isinstance(o, Exception)]
                self.stored += sum(1 for o in outcomes if isinstance(o, dict))
                time.sleep(0.01)
        self.engine.dispose()


def run(*, devices: int = 100_000, expired_days: int = 20, per_day: int = 5) -> tuple[list[Figure], dict[str, Any]]:
    figures: list[Figure] = []
    with pg_database() as url:
        settings = Settings(
            database_url=url, heartbeat_retention_days=RETENTION_DAYS, slow_heartbeat_ms=1e9, log_level="WARNING"
        )
        engine = make_engine(url)
        seeded = seed(engine, devices=devices, expired_days=expired_days, per_day=per_day)
        read_figures, details = reads(url, settings, devices)
        figures += read_figures
        details["seed"] = {k: v for k, v in seeded.items() if k != "cutoff"}

        # the baseline's copy: same rows, same indexes, no partitions
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE plain_heartbeats (LIKE device_heartbeats INCLUDING ALL)"))
            conn.execute(text("INSERT INTO plain_heartbeats SELECT * FROM device_heartbeats"))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE plain_heartbeats"))

        tokens = [security.new_secret(security.DEVICE_PREFIX) for _ in range(WRITERS)]
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE devices SET device_token_hash = :h WHERE id = :d"),
                [{"h": security.hash_secret(t), "d": _device(i)} for i, t in enumerate(tokens)],
            )
        ingest = Ingest(url, settings, tokens)
        ingest.start()
        time.sleep(3)  # ingestion before the cleanup: its own baseline
        factory = make_session_factory(engine, settings)
        steps = _Steps()
        cleanup_started = time.perf_counter()
        with steps, factory() as db:
            result = cleanup_old_heartbeats(db)
            db.commit()
        cleanup_s = time.perf_counter() - cleanup_started
        cleanup_ended = time.perf_counter()
        time.sleep(1)
        ingest.stop_at = time.perf_counter()
        ingest.join()

        with engine.begin() as conn:
            t0 = time.perf_counter()
            deleted_plain = conn.execute(
                text("DELETE FROM plain_heartbeats WHERE bucket_start < :c"), {"c": seeded["cutoff"]}
            ).rowcount
        delete_s = time.perf_counter() - t0
        with engine.connect() as conn:
            left_old = conn.execute(
                text("SELECT count(*) FROM device_heartbeats WHERE bucket_start < :c"), {"c": seeded["cutoff"]}
            ).scalar_one()
        engine.dispose()

        before = [ms for at, ms in ingest.latencies if at < cleanup_started]
        during = [ms for at, ms in ingest.latencies if cleanup_started <= at <= cleanup_ended]
        drops_s = (steps.first_batch or cleanup_ended) - cleanup_started
        details["cleanup"] = {
            "partitions_dropped": steps.partitions,
            "rows_in_dropped_partitions": steps.partition_rows,
            "drop_phase_s": drops_s,
            "boundary_batches": steps.batches,
            "batch_pause_ms": settings.cleanup_batch_pause_ms,
            "result": result,
            "seconds": cleanup_s,
            "single_delete_s": delete_s,
            "single_delete_rows": deleted_plain,
            "expired_rows_left": left_old,
            "ingest_errors": ingest.errors,
            "ingest_stored": ingest.stored,
            "ingest_p99_before_ms": pct(before, 99),
            "ingest_p99_during_ms": pct(during, 99),
            "ingest_batches_during": len(during),
        }
        figures += [
            # the goal: the expired days' rows gone in < 5 s (whole partitions, O(partitions)); the paced
            # trim of the boundary day that follows is reported beside it, without a goal
            Figure(
                "retention/postgresql",
                f"{steps.partition_rows:,} expired rows gone: {steps.partitions} days dropped while ingesting",
                drops_s,
                "s",
                f"one DELETE of {deleted_plain:,} rows",
                delete_s,
                below=CLEANUP_GOAL_S,
            ),
            Figure(
                "retention/postgresql",
                f"whole cleanup, {result['deleted']:,} rows: the above plus the boundary "
                f"day's {steps.batches} batches, {settings.cleanup_batch_pause_ms} ms apart",
                cleanup_s,
                "s",
                f"one DELETE of {deleted_plain:,} rows",
                delete_s,
                extra={
                    "ingest_errors": len(ingest.errors),
                    "expired_rows_left": left_old,
                    "ingest_p99_before_ms": pct(before, 99),
                    "ingest_p99_during_ms": pct(during, 99),
                },
            ),
        ]
    return figures, details
