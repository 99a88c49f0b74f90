"""NexMDM's own Prometheus metrics, next to Litestar's per-request ones (``nexmdm_requests_*``).

Created on first use, once per process (prometheus_client refuses a second metric of the same name, so
creation is under a lock: handlers run in many threads), and summed across workers by ``/metrics`` in
multiprocess mode like the request metrics.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram

_METRICS: dict[str, object] = {}
MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)
#: how ``/metrics`` combines a gauge over the workers: the highest, or the newest write of a live one
GaugeMode = Literal["max", "livemostrecent"]
_LOCK = threading.Lock()

PUSH_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


def _metric(name: str, make: Callable[[], MetricT]) -> MetricT:
    metric = _METRICS.get(name)
    if metric is None:
        with _LOCK:
            metric = _METRICS.get(name)
            if metric is None:
                metric = _METRICS[name] = make()
    return cast(MetricT, metric)  # stored under its name by this function only, made by ``make``


def _counter(name: str, documentation: str) -> Counter:
    return _metric(name, lambda: Counter(name, documentation, ["result"]))


def _gauge(name: str, documentation: str, mode: GaugeMode = "max") -> Gauge:
    return _metric(name, lambda: Gauge(name, documentation, multiprocess_mode=mode))


def count_heartbeat(result: str) -> None:
    """``created``, ``deduplicated`` or ``rate_limited``."""
    _counter("nexmdm_heartbeats", "Heartbeats handled, by result").labels(result).inc()


def count_command(result: str) -> None:
    """``created`` or ``replayed`` (an Idempotency-Key seen before with the same request)."""
    _counter("nexmdm_commands", "Commands dispatched through the API, by result").labels(result).inc()


#: the shared limiters that fall back to per-process counts when Redis cannot be reached
REDIS_LIMITERS = ("auth", "heartbeat", "fcm")


def _redis_fallbacks() -> Counter:
    return _metric(
        "nexmdm_redis_fallbacks",
        lambda: Counter(
            "nexmdm_redis_fallbacks", "Limiter decisions taken per process: Redis unreachable", ["limiter"]
        ),
    )


def count_redis_fallback(limiter: str) -> None:
    """A limiter decision taken in this process because Redis could not be reached (``REDIS_LIMITERS``)."""
    _redis_fallbacks().labels(limiter).inc()


def set_replica_lag(seconds: float) -> None:
    """How far behind the read replica was at the last admin listing (``NEXMDM_DATABASE_READ_URL``)."""
    _gauge("nexmdm_replica_lag_seconds", "Seconds the read replica was behind the primary").set(seconds)


def set_push_queue(depth: int, oldest_age_seconds: float) -> None:
    """Commands whose push is still pending, and how long the oldest has waited: written every round by the
    process that exports (the ``metrics`` lease), 0 by one that stopped exporting; the newest write wins
    among the workers of a node (so a crashed former exporter's last value is outvoted within a round)."""
    _gauge("nexmdm_push_queue_commands", "Commands whose FCM push is pending (the push queue)", "livemostrecent").set(
        depth
    )
    _gauge(
        "nexmdm_push_queue_oldest_age_seconds", "Age of the oldest command whose push is pending", "livemostrecent"
    ).set(oldest_age_seconds)


def set_webhook_outbox(pending: int, dead_last_hour: int) -> None:
    """The webhook outbox, from the database (so deliveries of every process count, ``nexmdm worker``'s too):
    written every round by the exporter (the ``metrics`` lease), 0 by one that stopped exporting."""
    _gauge("nexmdm_webhook_outbox_deliveries", "Webhook deliveries waiting in the outbox", "livemostrecent").set(
        pending
    )
    _gauge(
        "nexmdm_webhook_dead_deliveries", "Webhook deliveries that went dead in the last hour", "livemostrecent"
    ).set(dead_last_hour)


def observe_webhook(outcome: str) -> None:
    """Webhook sender observer: ``delivered``, ``retry`` (the attempt failed, another follows) or ``dead``
    (the last attempt failed), counted as ``delivered``, ``failed`` and ``dead``."""
    result = "failed" if outcome == "retry" else outcome
    _counter("nexmdm_webhook_deliveries", "Webhook delivery attempts, by result").labels(result).inc()


def forget_dead_workers() -> list[int]:
    """With ``serve --workers N``: remove the ``live*`` gauge samples of workers that are no longer running
    (prometheus_client keeps a dead process's file until ``mark_process_dead``), so that a killed exporter's
    last figures are not served until the server restarts. Returns the pids forgotten."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return []
    from prometheus_client import multiprocess

    dead: set[int] = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        suffix = path.stem.rsplit("_", 1)[-1]
        if suffix.isdigit() and not _running(int(suffix)):
            dead.add(int(suffix))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not one of our dead workers
    return True


def observe_push(outcome: str, latency_seconds: float | None) -> None:
    """Delivery worker observer: sends by outcome and push latency (created → sent)."""
    _counter("nexmdm_fcm_sends", "FCM sends, by outcome").labels(outcome).inc()
    if latency_seconds is not None:
        _push_latency().observe(latency_seconds)


def _push_latency() -> Histogram:
    return _metric(
        "nexmdm_push_latency_seconds",
        lambda: Histogram(
            "nexmdm_push_latency_seconds",
            "Seconds from accepting a command to FCM accepting its push",
            buckets=PUSH_LATENCY_BUCKETS,
        ),
    )


BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def observe_heartbeat_batch(size: int) -> None:
    """Beats stored together by one statement of the heartbeat writer (PostgreSQL)."""
    _batch_beats().observe(size)


def _batch_beats() -> Histogram:
    return _metric(
        "nexmdm_heartbeat_batch_beats",
        lambda: Histogram(
            "nexmdm_heartbeat_batch_beats", "Heartbeats stored by one statement", buckets=BATCH_SIZE_BUCKETS
        ),
    )


#: label values each counter starts with at 0, so that a dashboard or alert finds the series before the
#: first event (a rate over a series that does not exist yet is no data, not 0)
KNOWN_RESULTS = {
    "heartbeats": ("created", "deduplicated", "rate_limited"),
    "commands": ("created", "replayed"),
    "fcm_sends": ("sent", "retry", "unregistered", "invalid", "auth", "gave_up", "skipped", "lease_lost"),
    "webhook_deliveries": ("delivered", "failed", "dead"),
}


def declare() -> None:
    """Create NexMDM's own metrics with their known label values (called when a server process starts)."""
    count_names = {
        "heartbeats": "Heartbeats handled, by result",
        "commands": "Commands dispatched through the API, by result",
        "fcm_sends": "FCM sends, by outcome",
        "webhook_deliveries": "Webhook delivery attempts, by result",
    }
    for short, results in KNOWN_RESULTS.items():
        counter = _counter(f"nexmdm_{short}", count_names[short])
        for result in results:
            counter.labels(result)
    for limiter in REDIS_LIMITERS:
        _redis_fallbacks().labels(limiter)
    set_push_queue(0, 0.0)
    set_webhook_outbox(0, 0)
    _push_latency()
    _batch_beats()
