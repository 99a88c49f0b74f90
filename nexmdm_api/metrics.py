"""NexMDM's own Prometheus metrics, next to Litestar's per-request ones (``nexmdm_requests_*``).

Created on first use, once per process (prometheus_client refuses a second metric of the same name), and
summed across workers by ``/metrics`` in multiprocess mode like the request metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_COUNTERS: dict[str, Counter] = {}


def _counter(name: str, documentation: str) -> Counter:
    if name not in _COUNTERS:
        _COUNTERS[name] = Counter(name, documentation, ["result"])
    return _COUNTERS[name]


def count_heartbeat(result: str) -> None:
    """``created``, ``deduplicated`` or ``rate_limited``."""
    _counter("nexmdm_heartbeats", "Heartbeats handled, by result").labels(result).inc()


def count_command(result: str) -> None:
    """``created`` or ``replayed`` (an Idempotency-Key seen before with the same request)."""
    _counter("nexmdm_commands", "Commands dispatched through the API, by result").labels(result).inc()


_GAUGES: dict[str, Gauge] = {}
_PUSH_LATENCY: list[Histogram] = []


def _gauge(name: str, documentation: str) -> Gauge:
    if name not in _GAUGES:
        # every process computes the same value from the database: report the largest
        _GAUGES[name] = Gauge(name, documentation, multiprocess_mode="max")
    return _GAUGES[name]


def set_push_queue(depth: int, oldest_age_seconds: float) -> None:
    """Commands whose push is still pending, and how long the oldest has waited."""
    _gauge("nexmdm_push_queue_depth", "Commands whose FCM push is pending").set(depth)
    _gauge("nexmdm_push_queue_oldest_age_seconds", "Age of the oldest command whose push is pending").set(
        oldest_age_seconds
    )


def observe_push(outcome: str, latency_seconds: float | None) -> None:
    """Delivery worker observer: sends by outcome and push latency (created → sent)."""
    _counter("nexmdm_fcm_sends", "FCM sends, by outcome").labels(outcome).inc()
    if latency_seconds is not None:
        if not _PUSH_LATENCY:
            _PUSH_LATENCY.append(
                Histogram(
                    "nexmdm_push_latency_seconds",
                    "Seconds from accepting a command to FCM accepting its push",
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
                )
            )
        _PUSH_LATENCY[0].observe(latency_seconds)
