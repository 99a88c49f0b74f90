"""Work a server process does besides answering requests, started and stopped with the app.

* **Maintenance**: every process keeps PostgreSQL heartbeat partitions for the coming week (at start and
  then hourly, idempotent), so ingestion never depends on cron alone. One process among every node, the
  maintenance leader (the holder of the ``maintenance`` lease, ``core.leases``), runs the expiry sweep
  of unacknowledged commands and exports the push-queue and fleet-state gauges (``nexmdm_api.fleet_metrics``,
  at most every 15 s); when it dies another process takes the lease within ``LEADER_LEASE_SECONDS``.
  Every process checks readiness (its own gauge) and runs campaign releases, halts and completions
  (``core.fleet.run_due``, every second; idempotent across processes: the campaign row is locked). The
  leader also sweeps device presence (``device.online``/``device.offline``, ``core.events.presence``);
  every process flushes its audit trail's refusal counters.
* **Webhooks** (every process): a ``WebhookSender`` delivering the webhook outbox in its own threads.
* **APK builds** of the folder storage whose file is on this node are imported into the database once
  at start (``core.apk_storage.import_files``), so that every node can serve them.
* **Delivery** (when FCM is configured and ``NEXMDM_DELIVERY_IN_SERVER`` is on): a ``DeliveryWorker``
  pushing committed commands. Several processes may run one each: claims are leased and skip locked rows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from sqlalchemy.exc import SQLAlchemyError

from core import apk_storage, fleet, leases, partitions
from core.delivery import DeliveryWorker, client_from_settings, queue_stats, ratecap, sweep_expired
from core.errors import DatabaseUnavailable
from core.events import presence
from core.events.delivery import WebhookSender
from core.settings import Settings
from nexmdm_api import metrics
from nexmdm_api.auditbuffer import AuditBuffer
from nexmdm_api.db import Database
from nexmdm_api.fleet_metrics import FleetGauges
from nexmdm_api.routes.health import readiness

logger = logging.getLogger("nexmdm.api")

QUEUE_GAUGE_SECONDS = 5.0
PARTITIONS_EVERY_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 30.0
WEBHOOK_POLL_SECONDS = 1.0
#: campaigns are checked this often (one indexed SELECT when none is running)
CAMPAIGN_EVERY_SECONDS = 1.0
#: the leader renews its lease every round (``QUEUE_GAUGE_SECONDS``); a dead leader's passes on after this
LEADER_LEASE_SECONDS = 30.0
LEADER_LEASE = "maintenance"


class _Maintenance:
    """One maintenance round after another, every ``QUEUE_GAUGE_SECONDS``, until stopped."""

    def __init__(
        self, database: Database, settings: Settings, head: str, holder: str, audit_buffer: AuditBuffer
    ) -> None:
        self.database = database
        self.audit_buffer = audit_buffer
        self.settings = settings
        self.head = head
        self.holder = holder
        self.leader = False
        self.gauges = FleetGauges(settings)
        self.last_round = 0.0
        self.imported = settings.apk_storage != "database"
        self.last_partitions = 0.0
        self.last_sweep = 0.0

    def tick(self) -> bool:
        """Every ``CAMPAIGN_EVERY_SECONDS``: campaigns; every ``QUEUE_GAUGE_SECONDS``: readiness, then a round.

        Each step is guarded on its own, so one that keeps failing (a bad APK file, an audit aggregate the
        database refuses) never stops campaigns, the leader's lease or the sweeps. Returns False when a
        step failed (the caller then waits longer before the next tick).
        """
        healthy = True
        if time.monotonic() - self.last_round >= QUEUE_GAUGE_SECONDS or not self.last_round:
            self.last_round = time.monotonic()
            problem = self._readiness()  # first: it must see an outage
            if problem is not None:  # the database is unreachable or behind: one line, then wait
                logger.warning("maintenance waits: %s", problem)
                return False
            healthy = self.round()
        # campaign waves, halts and completions (idempotent across processes: the campaign row is locked)
        return self._guarded("campaigns", lambda: fleet.run_due(self.database.sessions, self.settings)) and healthy

    def _guarded(self, step: str, work: Any) -> bool:
        try:
            work()
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("maintenance %s could not use the database: %s", step, str(exc).splitlines()[0])
            return False
        except Exception:  # never end the thread: the other steps matter as much
            logger.exception("maintenance %s failed", step)
            return False
        return True

    def _readiness(self) -> str | None:
        try:
            problem, _ = readiness(self.database.read_engine, self.head)
        except Exception as exc:  # noqa: BLE001 - whatever stops the check is the answer: not ready
            problem = f"readiness check failed: {exc.__class__.__name__}"
        self.gauges.readiness(problem is None)
        return problem

    def _import_apks(self) -> None:
        """Builds of the folder storage whose file is on this node go into the database, once per process
        (a file that fails is logged; its first download tries again)."""
        self.imported = True
        with self.database.sessions() as db, db.begin():
            ids = apk_storage.import_files(db, self.settings)
        if ids:
            logger.info("imported APK builds %s from %s into the database", ids, self.settings.apk_dir)

    def _partitions(self) -> None:
        if time.monotonic() - self.last_partitions >= PARTITIONS_EVERY_SECONDS or not self.last_partitions:
            with self.database.engine.begin() as conn:
                created = partitions.ensure_ahead(conn)
            if created:
                logger.info("created heartbeat partitions %s", ", ".join(created))
            self.last_partitions = time.monotonic()

    def _gauges(self) -> None:
        with self.database.read_sessions() as db:
            stats = queue_stats(db)
        metrics.set_push_queue(stats["depth"], stats["oldest_age_seconds"])
        self.gauges.maybe_refresh(self.database.read_sessions)

    def round(self) -> bool:
        """Every process: APK import (once), refusal counters, the leader's lease, partitions ahead. The
        leader also: the expiry and presence sweeps, the push-queue and fleet gauges."""
        ok = True
        if not self.imported:
            ok = self._guarded("APK import", self._import_apks) and ok
        ok = self._guarded("audit counters", lambda: self.audit_buffer.flush(self.database.sessions)) and ok
        ok = self._guarded("leader election", self.elect) and ok
        ok = self._guarded("partitions", self._partitions) and ok
        if not self.leader:
            self.last_sweep = 0.0  # a new leader sweeps at once
            return ok
        if time.monotonic() - self.last_sweep >= SWEEP_EVERY_SECONDS:
            ok = self._guarded("expiry sweep", lambda: sweep_expired(self.database.sessions, self.settings)) and ok
            ok = self._guarded("presence sweep", lambda: presence.sweep(self.database.sessions, self.settings)) and ok
            self.last_sweep = time.monotonic()
        return self._guarded("gauges", self._gauges) and ok

    def elect(self) -> None:
        """Take or renew the ``maintenance`` lease: one leader among every process of every node."""
        with self.database.sessions() as db, db.begin():
            is_leader = leases.take(db, LEADER_LEASE, self.holder, LEADER_LEASE_SECONDS)
        if is_leader != self.leader:
            logger.info("maintenance_leader=%s holder=%s", "yes" if is_leader else "no", self.holder)
            self.leader = is_leader

    def hand_over(self) -> None:
        """On a clean stop: release the lease at once, so that another process leads at its next round."""
        if not self.leader:
            return
        try:
            with self.database.sessions() as db, db.begin():
                leases.release(db, LEADER_LEASE, self.holder)
        except (SQLAlchemyError, DatabaseUnavailable):
            pass  # it expires on its own


def _maintain(
    database: Database, settings: Settings, head: str, stop: threading.Event, holder: str, audit_buffer: AuditBuffer
) -> None:
    maintenance = _Maintenance(database, settings, head, holder, audit_buffer)
    while not stop.is_set():
        healthy = maintenance.tick()  # every step guarded: never raises
        stop.wait(CAMPAIGN_EVERY_SECONDS if healthy else QUEUE_GAUGE_SECONDS)
    maintenance.hand_over()


def background_lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database: Database = app.state.db
        metrics.declare()
        stop = threading.Event()
        app.state.maintenance_holder = holder = leases.new_holder("api")
        maintenance = threading.Thread(
            target=_maintain,
            args=(database, settings, app.state.head_revision, stop, holder, app.state.audit_buffer),
            name="nexmdm-maintenance",
            daemon=True,
        )
        threads = [maintenance]
        worker = None
        if settings.delivery_in_server:
            client = client_from_settings(settings)
            if client is not None:
                gate = ratecap.rate_gate(settings, on_fallback=metrics.count_redis_fallback)  # None without Redis
                worker = DeliveryWorker(
                    database.sessions, settings, client, observer=metrics.observe_push, limiter=gate
                )
                # the maintenance thread sweeps expired commands already: the worker only delivers
                delivery = threading.Thread(
                    target=worker.run,
                    args=(stop,),
                    kwargs={"sweep_every": math.inf},
                    name="nexmdm-delivery",
                    daemon=True,
                )
                threads.append(delivery)
        app.state.delivery_worker = worker
        webhooks = app.state.webhook_sender = WebhookSender(database.sessions, settings)
        threads.append(
            threading.Thread(
                target=webhooks.run, args=(stop, WEBHOOK_POLL_SECONDS), name="nexmdm-webhooks", daemon=True
            )
        )
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            webhooks.wake()
            for thread in threads:
                thread.join(timeout=15)
            if worker is not None:
                worker.close()
            webhooks.close()
            try:
                app.state.audit_buffer.flush(database.sessions)
            except Exception:  # noqa: BLE001 - stopping must not fail because the database is gone
                logger.warning("could not write the last audit aggregates")

    return lifespan
