"""NexMDM's own Prometheus metrics, next to Litestar's per-request ones (``nexmdm_requests_*``).

Created on first use, once per process (prometheus_client refuses a second metric of the same name), and
summed across workers by ``/metrics`` in multiprocess mode like the request metrics.
"""

from __future__ import annotations

from prometheus_client import Counter

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
