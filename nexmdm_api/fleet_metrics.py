"""Fleet-state gauges: devices by state, commands by status, campaign progress, readiness, retention.

One API process among every node exports them: the holder of the ``metrics`` lease
(``nexmdm_api.background``). Its maintenance loop calls :meth:`FleetGauges.maybe_refresh`, which runs the
fleet queries (``core.ops.fleet_stats``, every one index-backed) at most every ``REFRESH_SECONDS``, and
:meth:`FleetGauges.publish` every round, which writes the last values again; a scrape of ``/metrics``
only reads memory. A process that loses the lease (or whose database check fails) sets them to 0
(:meth:`FleetGauges.clear`), so that no former exporter keeps serving old figures: 0 is neutral under the
``max`` the shipped alerts and dashboard take across nodes.

Within one node (prometheus_client's multiprocess mode) the gauges use the ``livemostrecent`` mode: the
newest write of a living worker wins, one value per series; since the exporter writes its values every
round, a process that cleared its own after the lease moved is outvoted within a round, and the samples of
a worker that died (killed, restarted by uvicorn) are removed at the next round of any worker
(:func:`nexmdm_api.metrics.forget_dead_workers`), so that no dead exporter's figures stay served. A
stamp file in the shared metrics directory, taken under ``flock``, also keeps two workers of a node from
running the queries in the same period.

Campaign progress has no per-campaign series (the contract): campaigns by status, and the targets of
every campaign in flight added up by status.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import Gauge
from sqlalchemy.orm import Session

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.devices import compliance_terms
from core.models import COMMAND_STATUSES
from core.ops import fleet_stats

#: the fleet queries run at most this often per node
REFRESH_SECONDS = 15.0

_GAUGES: dict[str, Gauge] = {}
_LOCK = threading.Lock()

#: name → (help, labels); every name ends with its unit
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "nexmdm_fleet_devices": ("Devices by state (online, stale, offline, revoked), refreshed every 15 s", ("state",)),
    "nexmdm_fleet_commands": (
        "Commands created in the last hour, by their status now, refreshed every 15 s",
        ("status",),
    ),
    "nexmdm_fleet_pending_commands": ("Commands still pending (not acked, failed, expired or cancelled)", ()),
    "nexmdm_fleet_campaigns": ("Campaigns by status (kept 365 days after they end), refreshed every 15 s", ("status",)),
    "nexmdm_fleet_campaign_targets": (
        "Targets of the campaigns in flight (running, paused, halted), added up by status, refreshed every 15 s",
        ("status",),
    ),
    "nexmdm_fleet_went_offline_devices": ("Devices that crossed the offline threshold in the last hour", ()),
    "nexmdm_admin_expiring_keys": ("Admin keys (not revoked, not yet expired) that expire within 14 days", ()),
    "nexmdm_fleet_inventory_stale_devices": (
        "Unrevoked devices whose inventory is not known current: older than a day, or never reported",
        ("age",),
    ),
    "nexmdm_fleet_compliance_devices": (
        "Unrevoked devices by profile compliance (compliant, noncompliant, pending, unknown), refreshed every 15 s",
        ("state",),
    ),
    "nexmdm_heartbeats_oldest_age_seconds": ("Age of the oldest stored heartbeat (retention cleanup bounds it)", ()),
    "nexmdm_heartbeat_retention_seconds": ("Configured heartbeat retention (NEXMDM_HEARTBEAT_RETENTION_DAYS)", ()),
    "nexmdm_fleet_gauges_updated_timestamp_seconds": ("When the fleet gauges were last computed (Unix time)", ()),
    "nexmdm_readiness_failing_seconds": (
        "How long /readyz has been failing in this server (0 while ready): database unreachable or not migrated",
        (),
    ),
}


def gauge(name: str) -> Gauge:
    """The process's gauge ``name`` (created once; ``mostrecent`` across workers)."""
    metric = _GAUGES.get(name)
    if metric is None:
        with _LOCK:
            metric = _GAUGES.get(name)
            if metric is None:
                documentation, labels = GAUGES[name]
                metric = _GAUGES[name] = Gauge(name, documentation, labels, multiprocess_mode="livemostrecent")
    return metric


class _NodeStamp:
    """Across the workers of one server: whose turn it is to run the fleet queries (None: single process)."""

    def __init__(self) -> None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.path = Path(directory) / "nexmdm-fleet-gauges.stamp" if directory else None

    def claim(self, every: float) -> bool:
        """True when no worker of this node computed the gauges within ``every`` seconds (and records it)."""
        if self.path is None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64).decode(errors="replace").strip()
            try:
                last = float(raw)
            except ValueError:
                last = 0.0
            now = time.time()
            if 0 <= now - last < every:  # (a stamp from the future: the clock was set back)
                return False
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, repr(now).encode())
            return True
        finally:
            os.close(fd)  # closing releases the flock


class FleetGauges:
    """Owned by one server process's maintenance loop."""

    def __init__(self, settings: Settings, *, every: float = REFRESH_SECONDS) -> None:
        self.settings = settings
        self.every = every
        self._last = -float("inf")
        self._stamp = _NodeStamp()
        self._failing_since: float | None = None
        #: (gauge, label value or None) -> the value last computed, written again by :meth:`publish`
        self._values: dict[tuple[str, str | None], float] = {}
        gauge("nexmdm_heartbeat_retention_seconds").set(settings.heartbeat_retention_days * 86400)
        gauge("nexmdm_readiness_failing_seconds").set(0)

    def maybe_refresh(self, read_session: Callable[[], Any], *, force: bool = False) -> bool:
        """Compute and store the fleet gauges if their period has passed (or ``force``: a process that has
        just become the exporter); True when it ran the queries."""
        if not force and time.monotonic() - self._last < self.every:
            return False
        self._last = time.monotonic()
        if not self._stamp.claim(self.every) and not force:
            return False
        with read_session() as db:
            self.store(db)
        return True

    def publish(self) -> None:
        """Write the last computed values again (every round of the exporter: the newest write wins)."""
        for (name, label), value in self._values.items():
            metric = gauge(name)
            (metric.labels(label) if label is not None else metric).set(value)

    def clear(self) -> None:
        """This process no longer exports: every fleet-state series to 0 (``updated`` too), the next
        refresh runs at once."""
        self._values = {key: 0.0 for key in self._values}
        self.publish()
        self._values = {}
        self._last = -float("inf")

    def store(self, db: Session) -> None:
        snapshot = {
            # the device states, inventory freshness and compliance (the stored state) in one pass
            "devices": fleet_stats.device_counts(db, self.settings, inventory=True, compliance=True),
            "commands": fleet_stats.command_counts(db),
            "went_offline": fleet_stats.went_offline(db, self.settings, limit=0)["count"],
            "oldest": fleet_stats.oldest_heartbeat_age(db),
            "campaigns": fleet_stats.campaign_totals(db),
            "expiring_keys": admin_keys.expiring_keys(db),
        }
        values: dict[tuple[str, str | None], float] = {}
        for state in fleet_stats.DEVICE_STATES:
            values["nexmdm_fleet_devices", state] = snapshot["devices"][state]
        for status in COMMAND_STATUSES:
            values["nexmdm_fleet_commands", status] = snapshot["commands"]["last_hour"].get(status, 0)
        values["nexmdm_fleet_pending_commands", None] = snapshot["commands"]["pending"]
        for name, counts in (
            ("nexmdm_fleet_campaigns", snapshot["campaigns"]["campaigns"]),
            ("nexmdm_fleet_campaign_targets", snapshot["campaigns"]["targets"]),
        ):
            for status, count in counts.items():
                values[name, status] = count
        values["nexmdm_fleet_went_offline_devices", None] = snapshot["went_offline"]
        values["nexmdm_admin_expiring_keys", None] = snapshot["expiring_keys"]
        values["nexmdm_fleet_inventory_stale_devices", "older_than_a_day"] = snapshot["devices"]["inventory_old"]
        values["nexmdm_fleet_inventory_stale_devices", "never"] = snapshot["devices"]["inventory_never"]
        for state in compliance_terms.STATES:  # as ``nexmdm compliance`` counts them (``compliance.summary``)
            values["nexmdm_fleet_compliance_devices", state] = snapshot["devices"][f"compliance_{state}"]
        values["nexmdm_heartbeats_oldest_age_seconds", None] = snapshot["oldest"] or 0
        values["nexmdm_fleet_gauges_updated_timestamp_seconds", None] = time.time()
        self._values = values
        self.publish()

    def readiness(self, ready: bool) -> None:
        """Record one readiness check of the maintenance loop (the same rule as ``/readyz``)."""
        now = time.monotonic()
        if ready:
            self._failing_since = None
            gauge("nexmdm_readiness_failing_seconds").set(0)
            return
        if self._failing_since is None:
            self._failing_since = now
        # at least a tick above 0, so that "failing" shows from the first failed check
        gauge("nexmdm_readiness_failing_seconds").set(max(now - self._failing_since, 0.001))
