"""Part 5: sizing. 1, 2 and 4 API processes, each a node of its own (``nexmdm serve --workers 1`` on its
own port), against one PostgreSQL, with Redis for the shared limits when one answers on 127.0.0.1:6379.

One wrk per node drives its own slice of the fleet at the same moment, with the same total number of
connections at every node count. Reported per run: heartbeats per second (2xx only, summed over the
nodes), the worst node's p99, and where the CPU went: the nodes', and PostgreSQL's (the backends serving
the benchmark's database, read from /proc), as a share of the machine. ``devices per node`` is the
throughput per node × 60 (one beat a minute each) at saturation; plan at half of it. On a shared or
small machine the processes get only the CPU left to them: beats per CPU-second used (of the nodes, of
the database) are reported too, and are the steadier figures to size from.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg2

from bench.bench_http import BIN, _dsn, cpu_seconds, free_port, process_tree, seed_fleet, server, wrk
from bench.common import Figure, pg_database

REDIS_URL = os.environ.get("NEXMDM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_ok() -> bool:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - no Redis: in-process limits
        return False


def _backend_pids(url: str) -> list[int]:
    conn = psycopg2.connect(_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def _cleanup_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def run(
    tmp: Path, *, nodes: tuple[int, ...] = (1, 2, 4), devices: int = 10_000, seconds: int = 15, connections: int = 64
) -> tuple[list[Figure], dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    figures: list[Figure] = []
    details: dict[str, Any] = {"runs": [], "redis": _redis_ok(), "cpus": os.cpu_count()}
    prefix = f"nexmdm-bench-{uuid.uuid4().hex[:8]}:"
    with pg_database() as url:
        env = os.environ | {
            "NEXMDM_DATABASE_URL": url,
            "NEXMDM_HEARTBEAT_RATE_PER_MINUTE": "1000000",
            "NEXMDM_DATA_DIR": str(tmp / "data"),
            "NEXMDM_DB_POOL_SIZE": "5",
        }
        if details["redis"]:
            env |= {"NEXMDM_REDIS_URL": REDIS_URL, "NEXMDM_REDIS_KEY_PREFIX": prefix}
        fleet = seed_fleet(url, devices, tmp).read_text().splitlines(keepends=True)
        try:
            for count in nodes:
                details["runs"].append(_run_nodes(tmp, env, url, fleet, count, seconds, connections))
        finally:
            if details["redis"]:
                _cleanup_redis(prefix)
    one = details["runs"][0]["throughput_rps"] if details["runs"] else None
    for result in details["runs"]:
        count = result["nodes"]
        figures.append(
            Figure(
                "sizing",
                f"{count} node{'s' if count > 1 else ''} × 1 process, {devices:,} devices, {connections} connections",
                result["throughput_rps"],
                "beats/s",
                "1 node",
                one,
                None,
                {
                    k: result[k]
                    for k in (
                        "p99_ms",
                        "per_node_rps",
                        "devices_per_node_at_1_per_min",
                        "nodes_cpu_pct",
                        "db_cpu_pct",
                        "db_share_pct",
                        "beats_per_node_cpu_second",
                        "beats_per_db_cpu_second",
                        "non2xx",
                    )
                },
            )
        )
    return figures, details


def _run_nodes(
    tmp: Path, env: dict[str, str], url: str, fleet: list[str], count: int, seconds: int, connections: int
) -> dict[str, Any]:
    slices = []
    for i in range(count):
        path = tmp / f"nodes-{count}-{i}.txt"
        path.write_text("".join(fleet[i::count]))
        slices.append(path)
    per_node = max(1, connections // count)
    with ExitStack() as stack:
        ports, procs = [], []
        for i in range(count):
            port = free_port()
            argv = [str(BIN / "nexmdm"), "serve", "--workers", "1", "--no-worker", "--port", str(port)]
            procs.append(stack.enter_context(server(argv, env, port, tmp / f"node-{count}-{i}.log")))
            ports.append(port)

        def drive(duration: int) -> list[dict[str, Any]]:
            results: list[dict[str, Any]] = [{} for _ in ports]

            def one(i: int) -> None:
                results[i] = wrk(ports[i], slices[i], connections=per_node, seconds=duration, threads=1)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return results

        drive(2)  # warm-up: pools, caches, partitions
        node_pids = [pid for proc in procs for pid in process_tree(proc.pid)]
        db_pids = _backend_pids(url)
        nodes_before, db_before = cpu_seconds(node_pids), cpu_seconds(db_pids)
        started = time.perf_counter()
        results = drive(seconds)
        elapsed = time.perf_counter() - started
        nodes_cpu = 100 * (cpu_seconds(node_pids) - nodes_before) / elapsed
        db_cpu = 100 * (cpu_seconds(db_pids) - db_before) / elapsed
    total = sum(r["throughput_rps"] for r in results)
    return {
        "nodes": count,
        "connections_per_node": per_node,
        "throughput_rps": total,
        "per_node_rps": total / count,
        "devices_per_node_at_1_per_min": total / count * 60,
        "p99_ms": max(r["p99_ms"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "non2xx": sum(r["non2xx"] for r in results),
        "nodes_cpu_pct": nodes_cpu,
        "db_cpu_pct": db_cpu,
        "db_share_pct": 100 * db_cpu / (nodes_cpu + db_cpu) if nodes_cpu + db_cpu else 0.0,
        "loadgen_cpu_pct": sum(r["loadgen_cpu_pct"] for r in results),
        # on a shared machine the processes get what CPU they can: beats per CPU-second used is the steadier figure
        "beats_per_node_cpu_second": total / (nodes_cpu / 100) if nodes_cpu else 0.0,
        "beats_per_db_cpu_second": total / (db_cpu / 100) if db_cpu else 0.0,
        "per_node": results,
    }
