"""Part 6: pushes at fleet scale against a fake FCM 50 ms away, beside wrk's floor in the same run.

A fake FCM (``python -m nexmdm_cli.fakefcm``) runs in its own process and answers every send after
50 ms. The floor is wrk with 256 sends in flight against it. Then N devices with registration tokens
and one command each are created in one set-based statement while ``nexmdm worker`` processes (1, then
2) wait, and the time from that commit until every push is recorded ``sent`` gives NexMDM's rate. Every
device must get exactly one push (the fake counts pushes per request id; the database counts attempts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg2

from bench.bench_http import BIN, HERE, ROOT, _dsn, cpu_seconds, free_port, process_tree
from bench.common import Figure, pg_database
from nexmdm_cli.fakefcm import PROJECT, write_service_account

DELAY_MS = 50
FLOOR_CONNECTIONS = 256
GOAL_RATIO = 0.5
FLEET_GOAL = 100_000
FLEET_GOAL_SECONDS = 60.0


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback fake
        return json.loads(response.read())


def _post(url: str) -> None:
    request = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback fake
        pass


def start_fake(port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "nexmdm_cli.fakefcm", "--port", str(port), "--delay-ms", str(DELAY_MS)]
    with log.open("ab") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=sink, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _get(f"http://127.0.0.1:{port}/stats")
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the fake FCM did not start; see {log}")


def floor(port: int, seconds: int) -> dict[str, Any]:
    """wrk with 256 sends in flight against the fake: the most this box gets through it."""
    url = f"http://127.0.0.1:{port}/v1/projects/{PROJECT}/messages:send"
    argv = ["wrk", "-t2", f"-c{FLOOR_CONNECTIONS}", f"-d{seconds}s", "-s", str(HERE / "fcm.lua"), url]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"wrk printed no rate: {output[-300:]}")
    return {"throughput": float(match.group(1)), "connections": FLOOR_CONNECTIONS}


def seed(url: str, n: int, run: str) -> None:
    """``n`` devices with registration tokens, and one ``sync`` command each, in two set-based statements."""
    conn = psycopg2.connect(_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO devices (id, fcm_token, enrolled_at, model) "
            "SELECT %s || lpad(i::text, 6, '0'), 'fcm-' || %s || i, now(), 'bench' FROM generate_series(1, %s) i",
            (f"{run}-", run, n),
        )
    conn.close()


def create_commands(url: str, run: str) -> float:
    """One command per device of the run, in one statement; returns the moment it committed."""
    conn = psycopg2.connect(_dsn(url))
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO fcm_dispatches (request_id, device_id, action, payload_hash, status, fcm_status, "
            "replay_count, attempts, created_at) "
            "SELECT 'cmd-' || id, id, 'sync', 'bench', 'pending', 'pending', 0, 0, now() "
            "FROM devices WHERE id LIKE %s ORDER BY id",
            (f"{run}-%",),
        )
    committed = time.perf_counter()
    conn.close()
    return committed


def wait_sent(url: str, run: str, n: int, timeout: float) -> tuple[float, dict[str, int]]:
    conn = psycopg2.connect(_dsn(url))
    conn.autocommit = True
    deadline = time.perf_counter() + timeout
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT count(*) FILTER (WHERE fcm_status = 'sent'), count(*) FILTER (WHERE attempts > 1), "
                    "count(*) FILTER (WHERE fcm_status = 'failed') FROM fcm_dispatches WHERE device_id LIKE %s",
                    (f"{run}-%",),
                )
                sent, retried, failed = cur.fetchone()
                now = time.perf_counter()
                if sent + failed >= n or now > deadline:
                    return now, {"sent": sent, "attempted_twice": retried, "failed": failed}
                time.sleep(0.05)
    finally:
        conn.close()


def deliver(url: str, env: dict[str, str], fake: str, n: int, workers: int, tmp: Path) -> dict[str, Any]:
    """Start ``workers`` worker processes, create the commands, time them until all are pushed."""
    run = f"w{workers}"
    seed(url, n, run)
    _post(f"{fake}/reset")
    log = tmp / f"worker-{workers}.log"
    procs = []
    with log.open("ab") as sink:
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [str(BIN / "nexmdm"), "worker"], env=env, cwd=ROOT, stdout=sink, stderr=sink, start_new_session=True
                )
            )
    try:
        time.sleep(4.0)  # every worker up and polling (Python start-up is not part of the figure)
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"nexmdm worker exited with {proc.returncode}; see {log}")
        pids = [p for proc in procs for p in process_tree(proc.pid)]
        cpu_before = cpu_seconds(pids)
        started = create_commands(url, run)
        finished, counts = wait_sent(url, run, n, timeout=max(120.0, n / 50))
        elapsed = finished - started
        cpu = cpu_seconds(pids) - cpu_before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    stats = _get(f"{fake}/stats")
    rate = counts["sent"] / elapsed if elapsed > 0 else 0.0
    return {
        "workers": workers,
        "commands": n,
        "seconds": round(elapsed, 2),
        "pushes_per_s": round(rate, 1),
        "projected_100k_s": round(FLEET_GOAL / rate, 1) if rate else None,
        "worker_cpu_pct": round(100 * cpu / elapsed, 1) if elapsed > 0 else None,
        "fake_received": stats["received"],
        "fake_request_ids": stats["request_ids"],
        "pushed_twice_or_more": stats["pushed_twice_or_more"],
    } | counts


def run(
    tmp: Path, *, n: int = 20_000, floor_seconds: int = 10, worker_counts: tuple[int, ...] = (1, 2)
) -> tuple[list[Figure], dict[str, Any]]:
    port = free_port()
    fake_url = f"http://127.0.0.1:{port}"
    fake = start_fake(port, tmp / "fakefcm.log")
    figures: list[Figure] = []
    details: dict[str, Any] = {"delay_ms": DELAY_MS, "runs": []}
    try:
        base = floor(port, floor_seconds)
        details["floor"] = base
        key = write_service_account(tmp / "fake-service-account.json", f"{fake_url}/token")
        with pg_database() as url:
            env = os.environ | {
                "NEXMDM_DATABASE_URL": url,
                "NEXMDM_DATA_DIR": str(tmp / "data"),
                "NEXMDM_FCM_CREDENTIALS": str(key),
                "NEXMDM_FCM_ENDPOINT": fake_url,
                "NEXMDM_LOG_LEVEL": "WARNING",
            }
            for workers in worker_counts:
                result = deliver(url, env, fake_url, n, workers, tmp)
                details["runs"].append(result)
                exact = result["sent"] == n and result["fake_request_ids"] == n and not result["pushed_twice_or_more"]
                figures.append(
                    Figure(
                        "push/postgresql",
                        f"{n:,} commands pushed, {workers} worker process{'es' if workers > 1 else ''}"
                        f"{'' if exact else ' (NOT exactly one push each)'}",
                        result["pushes_per_s"],
                        "pushes/s",
                        f"wrk, {FLOOR_CONNECTIONS} in flight",
                        base["throughput"],
                        GOAL_RATIO,
                        result,
                    )
                )
                if result["projected_100k_s"] is not None:
                    figures.append(
                        Figure(
                            "push/postgresql",
                            f"projected time for {FLEET_GOAL:,} devices, {workers} worker process"
                            f"{'es' if workers > 1 else ''}",
                            result["projected_100k_s"],
                            "s",
                            below=FLEET_GOAL_SECONDS,
                        )
                    )
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    return figures, details
