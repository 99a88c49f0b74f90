"""``make bench``: every benchmark in one run, each figure beside its baseline from the same run.

Results go to ``bench/results/latest.json`` and are printed as a table. Goals are reported as met or
missed; nothing here fails a build (speed is measured, not asserted).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import (
    bench_campaigns,
    bench_console,
    bench_convergence,
    bench_helpers,
    bench_http,
    bench_inventory,
    bench_nodes,
    bench_profiles,
    bench_push,
    bench_retention,
    bench_startup,
    bench_stayup,
    bench_top,
)
from bench.common import Figure

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = [
    "helpers",
    "http",
    "retention",
    "startup",
    "top",
    "campaigns",
    "push",
    "nodes",
    "profiles",
    "stayup",
    "inventory",
    "console",
    "convergence",
]


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def _number(value: float) -> str:
    """Three significant figures for small values, whole numbers with separators for large ones."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def render(figures: list[Figure], console: Console) -> None:
    table = Table(title="NexMDM benchmark (ratios are against baselines measured in this run)")
    for col in ("group", "figure", "value", "baseline", "ratio", "goal"):
        table.add_column(col, justify="right" if col in ("value", "ratio") else "left")
    for f in figures:
        goal = "" if f.met is None else ("[green]met[/green]" if f.met else "[red]missed[/red]")
        if f.goal_ratio is not None:
            goal += f" (≥ {f.goal_ratio:g}×)"
        if f.below is not None:
            goal += f" (< {f.below:g} {f.unit})"
        base = f"{_number(f.baseline)} {f.unit} ({f.baseline_name})" if f.baseline is not None else ""
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else ""
        table.add_row(f.group, f.name, f"{_number(f.value)} {f.unit}", base, ratio, goal)
    console.print(table)


Part = tuple[str, Callable[[], tuple[list[Figure], object]]]


def _parts(tmp: Path, args: argparse.Namespace) -> dict[str, Part]:
    """Each part's title and how to run it (at a smaller scale with ``--quick``)."""
    quick = args.quick

    def helpers() -> tuple[list[Figure], object]:
        n = (300, 500) if quick else (3000, 5000)
        return bench_helpers.run(tmp, n_pg=n[0], n_sqlite=n[1]), None

    def http() -> tuple[list[Figure], object]:
        if quick:
            return bench_http.run(tmp, sizes=(200, 1000), seconds=3, simulate_sizes=(20, 100), simulate_seconds=5)
        return bench_http.run(tmp)

    def retention() -> tuple[list[Figure], object]:
        return bench_retention.run(devices=2_000, expired_days=3, per_day=5) if quick else bench_retention.run()

    def top() -> tuple[list[Figure], object]:
        if quick:
            return bench_top.run(devices=10_000, heartbeats=200_000, commands=10_000, rounds=5)
        return bench_top.run()

    def campaigns() -> tuple[list[Figure], object]:
        if quick:
            return bench_campaigns.run(tmp, pg_devices=10_000, sqlite_devices=2_000)
        return bench_campaigns.run(tmp)

    def push() -> tuple[list[Figure], object]:
        n = args.push_commands or (2_000 if quick else 20_000)
        return bench_push.run(tmp, n=n, floor_seconds=5 if quick else 10)

    def nodes() -> tuple[list[Figure], object]:
        return bench_nodes.run(tmp, devices=1_000, seconds=3, connections=32) if quick else bench_nodes.run(tmp)

    return {
        "helpers": ("1. persistence helpers vs the raw driver", helpers),
        "http": ("2. POST /v1/heartbeat through nexmdm serve vs the raw-insert floor; 4. memory", http),
        "retention": ("3. retention of expired heartbeats vs one DELETE; reads at 100,000 devices", retention),
        "startup": ("5. CLI start-up vs python -c pass", lambda: bench_startup.run(tmp, runs=5 if quick else 15)),
        "top": (
            "6. one refresh of nexmdm top at 100,000 devices and 10 million heartbeats (+ a campaign, a selector)",
            top,
        ),
        "campaigns": ("7. selectors and campaigns at 100,000 devices vs a raw INSERT ... SELECT", campaigns),
        "push": ("8. pushes: N commands through a fake FCM 50 ms away vs wrk's floor", push),
        "nodes": ("9. sizing: 1, 2 and 4 API nodes against one PostgreSQL", nodes),
        "profiles": (
            "11. profiles at 100,000 devices: plan, apply (vs one raw UPDATE), sweep, compliance",
            lambda: bench_profiles.run(n=10_000 if quick else 100_000),
        ),
        "stayup": (
            "10. failover write gap (pg_auto_failover); backup and restore of 10 M heartbeats vs pg_dump",
            lambda: bench_stayup.run_part(tmp, quick=quick),
        ),
        "inventory": (
            "11. inventory: the heartbeat with inventory_hash; PUTs vs the raw driver",
            lambda: bench_inventory.run_part(quick=quick),
        ),
        "console": (
            "12. the console at 100,000 devices: every page, failure groups, compliance by reason, < 300 ms",
            lambda: bench_console.run(n=10_000 if quick else 100_000),
        ),
        "convergence": (
            "13. a fleet-wide profile change: time until 99 % of 10,000 simulated devices report, vs 99 % told",
            lambda: bench_convergence.run_part(tmp, quick=quick),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sample sizes (a smoke run)")
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only these parts (repeatable; default: all)"
    )
    parser.add_argument("--push-commands", type=int, help="commands in the push part (default 20,000; --quick 2,000)")
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    console = Console(width=max(160, Console().width))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the in-process client's request lines
    figures: list[Figure] = []
    details: dict[str, object] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nexmdm-bench-") as tmp:
        for name in PARTS:
            if name in parts:
                title, run_part = _parts(Path(tmp), args)[name]
                console.print(f"[bold]{title}[/bold]")
                found, detail = run_part()
                figures += found
                if detail is not None:
                    details[name] = detail
    render(figures, console)
    RESULTS.mkdir(exist_ok=True)
    document = {
        "at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "figures": [f.as_dict() for f in figures],
        "details": details,
    }
    (RESULTS / "latest.json").write_text(json.dumps(document, indent=2, default=str))
    console.print(f"results written to {RESULTS / 'latest.json'} in {document['seconds']} s")


if __name__ == "__main__":
    main()
