"""What ``nexmdm simulate`` measures: latencies and statuses per endpoint, merged over processes, and the
report (percentiles, rates, errors) it prints."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nexmdm_cli.sim_convergence import Convergence

#: report rows for the pushed commands, measured from each command's creation
PUSHED = "FCM push (creation → device)"
ACKED = "ack (creation → stored)"


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))]


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    beats_created: int = 0
    beats_deduplicated: int = 0
    commands_acked: int = 0
    enrolled: int = 0
    #: who was told of which effective hash, and when its report on it was judged
    convergence: Convergence = field(default_factory=Convergence)

    def record(self, endpoint: str, status: str, latency_ms: float | None) -> None:
        self.statuses.setdefault(endpoint, Counter())[status] += 1
        if latency_ms is not None:
            self.latencies.setdefault(endpoint, []).append(latency_ms)

    def merge(self, other: Stats) -> None:
        """Add another process's figures to these."""
        for endpoint, values in other.latencies.items():
            self.latencies.setdefault(endpoint, []).extend(values)
        for endpoint, counts in other.statuses.items():
            self.statuses.setdefault(endpoint, Counter()).update(counts)
        self.beats_created += other.beats_created
        self.beats_deduplicated += other.beats_deduplicated
        self.commands_acked += other.commands_acked
        self.enrolled += other.enrolled
        self.convergence.merge(other.convergence)

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for e, c in self.statuses.items() if e not in (PUSHED, ACKED))

    def errors(self) -> Counter[str]:
        errors: Counter[str] = Counter()
        for endpoint, counts in self.statuses.items():
            if endpoint in (PUSHED, ACKED):
                continue
            errors.update({s: n for s, n in counts.items() if not s.startswith("2")})
        return errors

    def report(
        self, elapsed: float, devices: int, enroll_s: float | None = None, started: float | None = None
    ) -> dict[str, Any]:
        """The final report. Enrollment rates are over the enrollment phase, the rest over the run after it;
        ``started`` (``time.monotonic()`` at the start of the run) dates the profile convergence rows."""
        enroll_s = elapsed if enroll_s is None else enroll_s
        run_s = max(0.0, elapsed - enroll_s) or elapsed
        endpoints = {}
        for endpoint, counts in sorted(self.statuses.items()):
            values = self.latencies.get(endpoint, [])
            total = sum(counts.values())
            phase = enroll_s if endpoint == "POST /v1/enroll" else run_s
            endpoints[endpoint] = {
                "requests": total,
                "errors": sum(n for s, n in counts.items() if not s.startswith("2")),
                "throughput_rps": round(total / phase, 1) if phase else 0.0,
                "p50_ms": _round(percentile(values, 50)),
                "p95_ms": _round(percentile(values, 95)),
                "p99_ms": _round(percentile(values, 99)),
            }
        return {
            "devices": devices,
            "enrolled": self.enrolled,
            "elapsed_s": round(elapsed, 2),
            "enroll_s": round(enroll_s, 2),
            "requests": self.requests,
            "throughput_rps": round(self.requests / elapsed, 1) if elapsed else 0.0,
            "heartbeats": {"created": self.beats_created, "deduplicated": self.beats_deduplicated},
            "commands_acked": self.commands_acked,
            "errors_by_status": dict(sorted(self.errors().items())),
            "endpoints": endpoints,
            "profile_convergence": self.convergence.report(0.0 if started is None else started),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
