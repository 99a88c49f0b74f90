"""Part 2 and 4: ``POST /v1/heartbeat`` through ``nexmdm serve`` against the raw-insert HTTP floor; memory.

Both servers run under uvicorn with the same number of workers on the same PostgreSQL database, and
wrk drives both with the same script (a fleet of devices, each request the next device's heartbeat).
The load generator's own CPU use is reported beside the servers'. Then ``nexmdm simulate`` runs the
device schedule at 100, 1,000 and 10,000 devices, and the peak RSS of every server worker and of the
simulator is read from the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from bench.common import Figure, pg_database
from core.base import security

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: the goal for the heartbeat endpoint: half the floor's throughput, p99 under this many milliseconds
P99_GOAL_MS = 150.0
RSS_GOAL_MB = 200.0
#: simulated devices beat once a minute, as the fleet the goals describe (100,000 devices on one node)
SIMULATE_INTERVAL_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dsn(url: str) -> str:
    u = make_url(url)
    return f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"


def seed_fleet(url: str, n: int, folder: Path) -> Path:
    """``n`` enrolled devices with random tokens (hashes in the database); returns the wrk fleet file."""
    rows = [(f"bench-{i:06d}", security.new_secret(security.DEVICE_PREFIX)) for i in range(n)]
    conn = psycopg2.connect(_dsn(url))
    with conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO devices (id, device_token_hash, enrolled_at, token_issued_at, model) "
            "VALUES (%s, %s, now(), now(), 'bench')",
            [(device_id, security.hash_secret(token)) for device_id, token in rows],
        )
    conn.close()
    fleet = folder / f"fleet-{n}.txt"
    fleet.write_text("".join(f"{d} {t}\n" for d, t in rows))
    return fleet


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextmanager
def server(argv: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server and wait until its port accepts connections; stop it (and its workers) afterwards."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sink, stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"server on port {port} did not start; see {log}")
        time.sleep(1.0)  # every worker up, not only the first
        yield proc
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def wrk(
    port: int, fleet: Path, *, connections: int, seconds: int, threads: int = 2, pace_ms: float | None = None
) -> dict[str, Any]:
    """One wrk run; returns its figures plus the load generator's CPU use (share of one core).

    With ``pace_ms`` each connection waits that long between requests (a fixed request rate).
    """
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "heartbeat.lua"),
        f"http://127.0.0.1:{port}",
        "--",
        str(fleet),
        *([] if pace_ms is None else [str(int(pace_ms))]),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    line = next((x for x in output.splitlines() if x.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {output[-500:]}")
    result = json.loads(line.removeprefix("WRK_JSON "))
    # only answered 2xx count: a server answering errors fast must not look fast
    ok = result["requests"] - result["non2xx"]
    result["throughput_rps"] = ok / (result["duration_us"] / 1e6)
    result["loadgen_cpu_pct"] = 100 * (usage.ru_utime + usage.ru_stime) / elapsed
    return result


def _measure(
    label: str, proc: subprocess.Popen[bytes], port: int, fleet: Path, connections: int, seconds: int
) -> dict[str, Any]:
    wrk(port, fleet, connections=connections, seconds=2)  # warm-up: pools, caches, partitions
    pids = process_tree(proc.pid)
    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    result = wrk(port, fleet, connections=connections, seconds=seconds)
    result["server_cpu_pct"] = 100 * (cpu_seconds(pids) - cpu_before) / (time.perf_counter() - started)
    result["server"] = label
    return result


def _figure(devices: int, connections: int, ours: dict[str, Any], floor: dict[str, Any]) -> list[Figure]:
    goal = 0.5 if devices >= 10_000 else None
    extra = {
        "connections": connections,
        "p50_ms": ours["p50_ms"],
        "p95_ms": ours["p95_ms"],
        "p99_ms": ours["p99_ms"],
        "non2xx": ours["non2xx"],
        "socket_errors": ours["connect"] + ours["read"] + ours["write"] + ours["timeout"],
        "server_cpu_pct": ours["server_cpu_pct"],
        "loadgen_cpu_pct": ours["loadgen_cpu_pct"],
        "floor": {
            k: floor[k]
            for k in ("throughput_rps", "p50_ms", "p95_ms", "p99_ms", "non2xx", "server_cpu_pct", "loadgen_cpu_pct")
        },
    }
    name = f"POST /v1/heartbeat, {devices:,} devices, {connections} connections"
    figures = [
        Figure(
            "http/postgresql",
            name,
            ours["throughput_rps"],
            "req/s",
            "minimal Litestar raw insert",
            floor["throughput_rps"],
            goal,
            extra,
        )
    ]
    if goal is not None:
        figures.append(
            Figure(
                "http/postgresql",
                f"p99 latency, {devices:,} devices",
                ours["p99_ms"],
                "ms",
                "floor p99",
                floor["p99_ms"],
                below=P99_GOAL_MS,
            )
        )
    return figures


def simulate(port: int, devices: int, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    """``nexmdm simulate`` as a separate process; its report plus its own peak RSS and CPU."""
    argv = [
        str(BIN / "nexmdm"),
        "simulate",
        "--devices",
        str(devices),
        "--duration",
        str(seconds),
        "--interval",
        str(SIMULATE_INTERVAL_S),
        "--concurrency",
        "64",
        "--url",
        f"http://127.0.0.1:{port}",
        "--json",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"nexmdm simulate failed: {output[-500:]}")
    report = json.loads(output)
    report["peak_rss_mb"] = usage.ru_maxrss / 1024
    report["cpu_pct"] = 100 * (usage.ru_utime + usage.ru_stime) / (time.perf_counter() - started)
    return report


def cross_check(port: int, fleet: Path, report: dict[str, Any], seconds: float, details: dict[str, Any]) -> Figure:
    """wrk at the simulator's request rate against the same server: is the simulator's heartbeat p99 the server's?

    The rate is every request the simulated devices made after enrolling (heartbeats and command polls).
    """
    beats = report["endpoints"].get("POST /v1/heartbeat", {})
    rate = sum(e["throughput_rps"] for name, e in report["endpoints"].items() if name != "POST /v1/enroll")
    rate = max(1.0, rate)
    connections = 16
    pace = max(1.0, connections / rate * 1000)
    paced = wrk(port, fleet, connections=connections, seconds=int(min(seconds, 30)), pace_ms=pace)
    details["cross_check"] = {"simulate": beats, "simulate_rps": rate, "wrk_same_rate": paced, "pace_ms": pace}
    sim_p99 = beats.get("p99_ms") or float("nan")
    enough = paced["requests"] >= 100 and beats.get("requests", 0) >= 100  # a p99 of fewer says nothing
    return Figure(
        "simulate",
        f"heartbeat p99: nexmdm simulate ÷ wrk at the same rate (~{rate:,.0f} req/s)"
        + ("" if enough else ", too few requests to compare"),
        sim_p99 / paced["p99_ms"] if paced["p99_ms"] else float("nan"),
        "×",
        extra={"simulate_p99_ms": sim_p99, "wrk_p99_ms": paced["p99_ms"], "wrk_rps": paced["throughput_rps"]},
        below=2.0 if enough else None,
    )


def run(
    tmp: Path,
    *,
    sizes: tuple[int, ...] = (1_000, 10_000),
    seconds: int = 15,
    connections: int = 64,
    simulate_sizes: tuple[int, ...] = (100, 1_000, 10_000),
    simulate_seconds: float = 60,
    workers: int = 2,
) -> tuple[list[Figure], dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    figures: list[Figure] = []
    details: dict[str, Any] = {"http": [], "simulate": [], "memory": {}}
    with pg_database() as url:
        env = os.environ | {
            "NEXMDM_DATABASE_URL": url,
            "NEXMDM_BENCH_FLOOR_DSN": _dsn(url),
            # the per-device limit would answer 429 to a fleet beating faster than once a second
            "NEXMDM_HEARTBEAT_RATE_PER_MINUTE": "1000000",
            "NEXMDM_DATA_DIR": str(tmp / "data"),
        }
        fleet_all = seed_fleet(url, max(sizes), tmp)
        lines = fleet_all.read_text().splitlines(keepends=True)
        floor_argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.floor_app:app",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        serve_argv = [str(BIN / "nexmdm"), "serve", "--workers", str(workers), "--no-worker"]
        rss: dict[str, list[float]] = {}
        for devices in sizes:
            fleet = tmp / f"fleet-{devices}-slice.txt"
            fleet.write_text("".join(lines[:devices]))
            port = free_port()
            with server([*floor_argv, "--port", str(port)], env, port, tmp / "floor.log") as proc:
                floor = _measure("floor", proc, port, fleet, connections, seconds)
            port = free_port()
            with server([*serve_argv, "--port", str(port)], env, port, tmp / "serve.log") as proc:
                ours = _measure("nexmdm serve", proc, port, fleet, connections, seconds)
                if devices == max(sizes):
                    rss["after wrk"] = [m for p in process_tree(proc.pid)[1:] if (m := peak_rss_mb(p))]
            details["http"] += [floor | {"devices": devices}, ours | {"devices": devices}]
            figures += _figure(devices, connections, ours, floor)

        port = free_port()
        with server([*serve_argv, "--port", str(port)], env, port, tmp / "serve.log") as proc:
            for devices in simulate_sizes:
                report = simulate(port, devices, simulate_seconds, env)
                details["simulate"].append(report)
                beats = report["endpoints"].get("POST /v1/heartbeat", {})
                figures.append(
                    Figure(
                        "simulate",
                        f"nexmdm simulate, {devices:,} devices, a beat a minute each",
                        beats.get("throughput_rps", 0.0),
                        "beats/s",
                        "",
                        None,
                        None,
                        {k: beats.get(k) for k in ("p50_ms", "p95_ms", "p99_ms", "errors")}
                        | {"errors_by_status": report["errors_by_status"], "simulator_cpu_pct": report["cpu_pct"]},
                    )
                )
                if devices == max(simulate_sizes):
                    figures.append(cross_check(port, fleet_all, report, simulate_seconds, details))
            workers_rss = [m for p in process_tree(proc.pid)[1:] if (m := peak_rss_mb(p))]
        simulator_rss = max(r["peak_rss_mb"] for r in details["simulate"])
        server_peak = max(workers_rss + rss.get("after wrk", []))
        details["memory"] = {
            "server_workers_mb": workers_rss,
            "after_wrk_mb": rss.get("after wrk"),
            "simulator_mb": simulator_rss,
        }
        figures += [
            Figure(
                "memory",
                "server peak RSS per worker",
                server_peak,
                "MB",
                extra={"per_process": workers_rss},
                below=RSS_GOAL_MB,
            ),
            Figure(
                "memory",
                f"nexmdm simulate peak RSS at {max(simulate_sizes):,} devices",
                simulator_rss,
                "MB",
                "",
                None,
                None,
            ),
        ]
    return figures, details
