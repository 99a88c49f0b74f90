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
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import bench_helpers, bench_http, bench_retention, bench_startup
from bench.common import Figure

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ["helpers", "http", "retention", "startup"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sample sizes (a smoke run)")
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only these parts (repeatable; default: all)"
    )
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    console = Console(width=max(160, Console().width))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the in-process client's request lines
    figures: list[Figure] = []
    details: dict[str, object] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nexmdm-bench-") as tmp:
        if "helpers" in parts:
            console.print("[bold]1. persistence helpers vs the raw driver[/bold]")
            n = (300, 500) if args.quick else (3000, 5000)
            figures += bench_helpers.run(Path(tmp), n_pg=n[0], n_sqlite=n[1])
        if "http" in parts:
            console.print("[bold]2. POST /v1/heartbeat through nexmdm serve vs the raw-insert floor; 4. memory[/bold]")
            if args.quick:
                found, details["http"] = bench_http.run(
                    Path(tmp), sizes=(200, 1000), seconds=3, simulate_sizes=(20, 100), simulate_seconds=5
                )
            else:
                found, details["http"] = bench_http.run(Path(tmp))
            figures += found
        if "retention" in parts:
            console.print("[bold]3. retention of expired heartbeats vs one DELETE; reads at 100,000 devices[/bold]")
            if args.quick:
                found, details["retention"] = bench_retention.run(devices=2_000, expired_days=3, per_day=5)
            else:
                found, details["retention"] = bench_retention.run()
            figures += found
        if "startup" in parts:
            console.print("[bold]5. CLI start-up vs python -c pass[/bold]")
            found, details["startup"] = bench_startup.run(Path(tmp), runs=5 if args.quick else 15)
            figures += found
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
