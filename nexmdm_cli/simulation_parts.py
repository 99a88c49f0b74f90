"""``nexmdm simulate --processes N``: the fleet split over N processes, their figures merged.

One Python process spends ~0.1-0.2 ms of CPU per request; past a few thousand requests a second the
simulator's own event loop, not the server, would set the tail. Each process runs its share of the
devices (device ``i`` in process ``i % N``) with its own client and reports raw latencies, which are
merged before the percentiles are taken (percentiles of parts cannot be averaged).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from collections.abc import Callable
from typing import Any

from nexmdm_cli.sim_stats import Stats
from nexmdm_cli.simulation import Simulation


def _part(options: dict[str, Any], part: int, parts: int, results: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    sim = Simulation(**options, part=part, parts=parts)
    try:
        report = asyncio.run(sim.run())
        results.put((part, sim.stats, report["elapsed_s"], report["enroll_s"], None))
    except Exception as exc:  # noqa: BLE001 - reported by the parent in one line
        results.put((part, Stats(), 0.0, 0.0, f"{type(exc).__name__}: {exc}"))


def run_in_processes(
    options: dict[str, Any], parts: int, on_tick: Callable[[float], None] | None = None
) -> dict[str, Any]:
    """Run ``Simulation(**options)`` split over ``parts`` processes; returns the merged report."""
    forks = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork") if forks else multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_part, args=(options, i, parts, results), daemon=True, name=f"nexmdm-simulate-{i}")
        for i in range(parts)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    merged, elapsed, enroll, errors = Stats(), 0.0, 0.0, []
    expected = options["duration"] + 600  # enrollment of a large fleet takes a while too
    received = 0
    try:
        while received < parts:
            if on_tick is not None:
                on_tick(min(1.0, (time.monotonic() - started) / max(0.001, options["duration"])))
            try:
                _, stats, part_elapsed, part_enroll, error = results.get(timeout=0.25)
            except queue.Empty:
                gone = time.monotonic() - started > expected or not any(p.is_alive() for p in processes)
                if gone and results.empty():
                    raise RuntimeError("a simulator process ended without a report") from None
                continue
            received += 1
            merged.merge(stats)
            elapsed, enroll = max(elapsed, part_elapsed), max(enroll, part_enroll)
            if error:
                errors.append(error)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    if errors:
        raise RuntimeError(errors[0])
    report = merged.report(elapsed, options["devices"], enroll_s=enroll, started=started)
    report["processes"] = parts
    return report
