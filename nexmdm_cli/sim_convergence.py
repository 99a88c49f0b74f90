"""Profile convergence as ``nexmdm simulate`` sees it, on its own clocks.

For every effective hash a heartbeat answer names during a run: when the first device was told of it, and
how long after that 50 %, 90 % and 99 % of the devices told of it had a status report on it stored and
judged compliant or noncompliant by the server (``POST /v1/profile/status`` answered 200). Beside them, the
same percentiles of being told (the heartbeat answers alone): the floor the heartbeat interval sets, since
a device cannot act on a change before its next heartbeat.

Times are ``time.monotonic()``: one clock for every simulator process on the machine (Linux's
``CLOCK_MONOTONIC``), so the parts of a ``--processes`` run merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: the server's judgements that count as converged (``pending``: the device is still at it)
SETTLED = ("compliant", "noncompliant")
PERCENTILES = (50, 90, 99)


@dataclass
class Convergence:
    #: effective hash -> device -> when a heartbeat answer first named that hash to that device
    told: dict[str, dict[str, float]] = field(default_factory=dict)
    #: effective hash -> device -> (when its first settled report on that hash was stored, the server's state)
    settled: dict[str, dict[str, tuple[float, str]]] = field(default_factory=dict)

    def tell(self, digest: str, device_id: str, at: float) -> None:
        self.told.setdefault(digest, {}).setdefault(device_id, at)

    def judged(self, digest: str, device_id: str, state: str, at: float) -> None:
        if state not in SETTLED:
            return
        self.tell(digest, device_id, at)  # (its profile fetch may have found the hash before a heartbeat did)
        self.settled.setdefault(digest, {}).setdefault(device_id, (at, state))

    def merge(self, other: Convergence) -> None:
        for digest, devices in other.told.items():
            for device_id, at in devices.items():
                self.tell(digest, device_id, at)
        for digest, reports in other.settled.items():
            mine = self.settled.setdefault(digest, {})
            for device_id, report in reports.items():
                if device_id not in mine or report[0] < mine[device_id][0]:
                    mine[device_id] = report

    def report(self, started: float) -> list[dict[str, Any]]:
        """One row per effective hash, in the order devices were first told of them; seconds from the first
        device told (``first_told_s``: from the start of the run). A percentile not reached is ``None``."""
        rows = []
        for digest, devices in sorted(self.told.items(), key=lambda item: min(item[1].values())):
            first = min(devices.values())
            reports = {d: r for d, r in self.settled.get(digest, {}).items() if d in devices}
            done = sorted(at for at, _ in reports.values())
            told = sorted(devices.values())
            states = [state for _, state in reports.values()]
            row: dict[str, Any] = {
                "effective_hash": digest,
                "first_told_s": round(first - started, 2),
                "devices_told": len(devices),
                "devices_reported": len(done),
                "compliant": states.count("compliant"),
                "noncompliant": states.count("noncompliant"),
                "converged_pct": round(100 * len(done) / len(devices), 1),
            }
            for pct in PERCENTILES:
                row[f"p{pct}_s"] = _reached(done, pct, len(devices), first)
            for pct in PERCENTILES:
                row[f"told_p{pct}_s"] = _reached(told, pct, len(devices), first)
            rows.append(row)
        return rows


def _reached(times: list[float], pct: int, population: int, first: float) -> float | None:
    """Seconds after ``first`` at which ``pct`` % of ``population`` had happened (``times`` sorted)."""
    needed = max(1, math.ceil(pct / 100 * population))
    return round(times[needed - 1] - first, 2) if needed <= len(times) else None
