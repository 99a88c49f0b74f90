"""Profile convergence at fleet scale (issue 24): how long until 99 % of 10,000 simulated devices report on a
fleet-wide profile change, as ``nexmdm simulate`` measures it on its own clocks.

``nexmdm serve`` on PostgreSQL, ``nexmdm simulate`` against it (no profile at first); once every device is
enrolled and has beaten at least once, ``nexmdm profiles apply`` of one profile for the whole fleet. The
figure is the simulator's time from the first device told of the new effective hash (a heartbeat answer) to
99 % of them having their report judged; its baseline, same run, is the time until 99 % of them were *told*:
a device hears of a change only at its next heartbeat, so that share is the heartbeat interval's floor, and
the rest is the fetch, apply and report. The load average is recorded beside it (the machine is shared).

    python -m bench.bench_convergence            # 10,000 devices, a beat a minute
    python -m bench.bench_convergence --quick    # 500 devices, a beat every 10 s
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

from bench.bench_http import BIN, ROOT, _dsn, free_port, server
from bench.common import Figure, pg_database

#: one fleet-wide profile (no selector): every device's effective hash moves at once
PROFILE = {
    "name": "fleet",
    "priority": 0,
    "apps": [{"package": "com.acme.pos", "install": "required", "min_version_code": 4200}],
    "settings": {"wifi": {"ssid": "store"}},
}


def _enrolled(url: str) -> int:
    conn = psycopg2.connect(_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM devices")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def _wait_enrolled(url: str, devices: int, sim: subprocess.Popen[bytes], limit: float) -> float:
    """Seconds until every device is enrolled (the simulator starts beating right after)."""
    started = time.monotonic()
    while _enrolled(url) < devices:
        if sim.poll() is not None:
            raise RuntimeError(f"nexmdm simulate exited with {sim.returncode} while enrolling")
        if time.monotonic() - started > limit:
            raise RuntimeError(f"{devices:,} devices did not enroll within {limit:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def converge(
    tmp: Path, *, devices: int, interval: float, enroll_limit: float = 900, workers: int = 2
) -> tuple[list[Figure], dict[str, Any]]:
    """One run: serve, simulate, a fleet-wide apply once the fleet is steady; the simulator's convergence row."""
    settle = 1.25 * interval  # every device has beaten once (its first beat comes within one interval)
    window = 3 * interval + 10  # the change reaches each device within ~1.2 intervals, then one fetch
    profile_file = tmp / "fleet-profile.json"
    profile_file.write_text(json.dumps(PROFILE))
    load_before = os.getloadavg()
    with pg_database() as url:
        env = os.environ | {
            "NEXMDM_DATABASE_URL": url,
            "NEXMDM_HEARTBEAT_RATE_PER_MINUTE": "1000000",
            "NEXMDM_DATA_DIR": str(tmp / "data"),
        }
        port = free_port()
        serve_argv = [str(BIN / "nexmdm"), "serve", "--workers", str(workers), "--no-worker", "--port", str(port)]
        with server(serve_argv, env, port, tmp / "serve-convergence.log"):
            sim_argv = [
                str(BIN / "nexmdm"),
                "simulate",
                *("--devices", str(devices), "--duration", str(settle + window), "--interval", str(interval)),
                *("--concurrency", "64", "--url", f"http://127.0.0.1:{port}", "--json"),
            ]
            with (tmp / "simulate-convergence.json").open("w+b") as out:
                sim = subprocess.Popen(sim_argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL)
                try:
                    enroll_s = _wait_enrolled(url, devices, sim, enroll_limit)
                    time.sleep(settle)
                    started = time.monotonic()
                    subprocess.run(
                        [str(BIN / "nexmdm"), "profiles", "apply", "-f", str(profile_file), "--yes"],
                        env=env,
                        cwd=ROOT,
                        check=True,
                        capture_output=True,
                    )
                    apply_s = time.monotonic() - started
                    load_during = os.getloadavg()
                    if sim.wait(timeout=settle + window + 300) != 0:
                        raise RuntimeError(f"nexmdm simulate exited with {sim.returncode}")
                finally:
                    if sim.poll() is None:
                        sim.kill()
                        sim.wait()
                out.seek(0)
                report = json.loads(out.read())
    rows = report["profile_convergence"]
    if len(rows) != 1:
        raise RuntimeError(f"expected one effective hash told, the simulator saw {len(rows)}")
    row = rows[0]
    beats = report["endpoints"].get("POST /v1/heartbeat", {})
    detail = {
        "devices": devices,
        "interval_s": interval,
        "enroll_s": round(enroll_s, 1),
        "apply_s": round(apply_s, 2),
        "load_average": {"before": load_before, "at the change": load_during, "after": os.getloadavg()},
        "convergence": row,
        "heartbeat": {k: beats.get(k) for k in ("requests", "errors", "p50_ms", "p99_ms")},
        "endpoints": report["endpoints"],
        "elapsed_s": report["elapsed_s"],
        "errors_by_status": report["errors_by_status"],
    }
    keys = ("p50_s", "p90_s", "told_p50_s", "told_p90_s", "converged_pct", "devices_told", "compliant", "noncompliant")
    extra = {k: row[k] for k in keys}
    extra |= {"interval_s": interval, "apply_s": detail["apply_s"], "load_average": detail["load_average"]}
    p99 = row["p99_s"]
    figure = Figure(
        "convergence",
        f"fleet-wide profile change, {devices:,} devices, a beat every {interval:g} s: 99 % reported",
        float("nan") if p99 is None else p99,
        "s",
        "99 % told (heartbeat answers alone)",
        row["told_p99_s"],
        extra=extra,
    )
    return [figure], detail


def run_part(tmp: Path, *, quick: bool = False) -> tuple[list[Figure], dict[str, Any]]:
    return converge(tmp, devices=500, interval=10) if quick else converge(tmp, devices=10_000, interval=60)


def _print(figure: Figure, detail: dict[str, Any]) -> None:
    row = detail["convergence"]
    print(figure.name)
    print(
        f"  time to 50 / 90 / 99 % reported: {row['p50_s']} / {row['p90_s']} / {row['p99_s']} s "
        f"({row['converged_pct']} % of {row['devices_told']:,} told converged; {row['compliant']:,} compliant)"
    )
    print(
        f"  baseline, same run: 50 / 90 / 99 % told after {row['told_p50_s']} / {row['told_p90_s']} / "
        f"{row['told_p99_s']} s; the heartbeat interval {detail['interval_s']} s (±20 %)"
    )
    print(f"  enrollment {detail['enroll_s']} s, profiles apply {detail['apply_s']} s (the CLI, start to exit)")
    print(f"  simulate: {detail['elapsed_s']} s in all, errors {detail['errors_by_status'] or 'none'}")
    for endpoint, figures in detail["endpoints"].items():
        print(f"    {endpoint}: {figures}")
    print(f"  load average {detail['load_average']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 devices, a beat every 10 s")
    parser.add_argument("--devices", type=int, help="simulated devices (default 10,000; --quick 500)")
    parser.add_argument("--interval", type=float, help="seconds between a device's beats (default 60; --quick 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nexmdm-bench-") as folder:
        devices = args.devices or (500 if args.quick else 10_000)
        interval = args.interval or (10.0 if args.quick else 60.0)
        [found], details = converge(Path(folder), devices=devices, interval=interval)
        _print(found, details)
