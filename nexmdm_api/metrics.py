"""NexMDM's own Prometheus metrics, next to Litestar's per-request ones (``nexmdm_requests_*``).

Created on first use, once per process (prometheus_client refuses a second metric of the same name, so
creation is under a lock: handlers run in many threads), and summed across workers by ``/metrics`` in
multiprocess mode like the request metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_METRICS: dict[str, Any] = {}
_LOCK = threading.Lock()

PUSH_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


def _metric(name: str, make: Callable[[], Any]) -> Any:
    metric = _METRICS.get(name)
    if metric is None:
        with _LOCK:
            metric = _METRICS.get(name)
            if metric is None:
                metric = _METRICS[name] = make()
    return metric


def _counter(name: str, documentation: str) -> Counter:
    return _metric(name, lambda: Counter(name, documentation, ["result"]))


def _gauge(name: str, documentation: str) -> Gauge:
    # every process computes the same value from the database: report the largest
    return _metric(name, lambda: Gauge(name, documentation, multiprocess_mode="max"))


def count_heartbeat(result: str) -> None:
    """``created``, ``deduplicated`` or ``rate_limited``."""
    _counter("nexmdm_heartbeats", "Heartbeats handled, by result").labels(result).inc()


def count_command(result: str) -> None:
    """``created`` or ``replayed`` (an Idempotency-Key seen before with the same request)."""
    _counter("nexmdm_commands", "Commands dispatched through the API, by result").labels(result).inc()


def count_redis_fallback(limiter: str) -> None:
    """A limiter decision taken in this process because Redis could not be reached (``auth``, ``heartbeat``)."""
    _metric(
        "nexmdm_redis_fallbacks",
        lambda: Counter(
            "nexmdm_redis_fallbacks", "Limiter decisions taken per process: Redis unreachable", ["limiter"]
        ),
    ).labels(limiter).inc()


def set_replica_lag(seconds: float) -> None:
    """How far behind the read replica was at the last admin listing (``NEXMDM_DATABASE_READ_URL``)."""
    _gauge("nexmdm_replica_lag_seconds", "Seconds the read replica was behind the primary").set(seconds)


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
        histogram = _metric(
            "nexmdm_push_latency_seconds",
            lambda: Histogram(
                "nexmdm_push_latency_seconds",
                "Seconds from accepting a command to FCM accepting its push",
                buckets=PUSH_LATENCY_BUCKETS,
            ),
        )
        histogram.observe(latency_seconds)


BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def observe_heartbeat_batch(size: int) -> None:
    """Beats stored together by one statement of the heartbeat writer (PostgreSQL)."""
    _metric(
        "nexmdm_heartbeat_batch_size",
        lambda: Histogram(
            "nexmdm_heartbeat_batch_size", "Heartbeats stored by one statement", buckets=BATCH_SIZE_BUCKETS
        ),
    ).observe(size)
