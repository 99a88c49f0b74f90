"""Work a server process does besides answering requests, started and stopped with the app.

* **Maintenance** (``core.ops.maintenance``, shared with ``nexmdm worker``): campaigns every second, heartbeat
  partitions ahead, and the leader's expiry and presence sweeps; the leader is one process among every
  node and every ``nexmdm worker`` (the ``maintenance`` lease). An API process adds readiness (its own
  gauge), its audit trail's refusal counters, and the push-queue and fleet-state gauges
  (``nexmdm_api.fleet_metrics``, at most every 15 s), exported by one API process among every node (the
  ``metrics`` lease, which workers never take: they serve no ``/metrics``).
* **Webhooks** (every process): a ``WebhookSender`` delivering the webhook outbox in its own threads.
* **APK builds** of the folder storage whose file is on this node are imported into the database once
  at start (``core.apk.storage.import_files``), so that every node can serve them.
* **Delivery** (when FCM is configured and ``NEXMDM_DELIVERY_IN_SERVER`` is on): a ``DeliveryWorker``
  pushing committed commands. Several processes may run one each: claims are leased and skip locked rows.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from sqlalchemy.exc import SQLAlchemyError

from core.base.errors import DatabaseUnavailable
from core.base.settings import Settings
from core.commands.push import DeliveryWorker, client_from_settings, queue_stats, ratecap
from core.events.sender import WebhookSender
from core.events.webhooks import outbox_stats
from core.ops import leases
from core.ops.maintenance import LEADER_LEASE_SECONDS, Maintenance
from nexmdm_api import metrics
from nexmdm_api.auditbuffer import AuditBuffer
from nexmdm_api.db import Database
from nexmdm_api.fleet_metrics import FleetGauges
from nexmdm_api.routes.health import readiness

logger = logging.getLogger("nexmdm.api")

WEBHOOK_POLL_SECONDS = 1.0
#: the lease of the process that exports the push-queue and fleet gauges: API processes only (a
#: ``nexmdm worker`` may lead the sweeps, but it serves no ``/metrics``)
METRICS_LEASE = "metrics"


class _Maintenance(Maintenance):
    """:class:`core.ops.maintenance.Maintenance` plus what an API process adds: readiness first (its own gauge),
    the audit trail's refusal counters every round, and the push-queue and fleet gauges exported by one
    API process among every node (the holder of the ``metrics`` lease)."""

    def __init__(
        self, database: Database, settings: Settings, head: str, holder: str, audit_buffer: AuditBuffer
    ) -> None:
        super().__init__(database.sessions, database.engine, settings, holder)
        self.database = database
        self.audit_buffer = audit_buffer
        self.head = head
        self.exporter = False
        #: just became the exporter: compute the fleet gauges at its next round, whatever the period
        self.fresh = False
        self.gauges = FleetGauges(settings)

    def readiness(self) -> str | None:
        try:
            problem, _ = readiness(self.database.read_engine, self.head)
        except Exception as exc:  # noqa: BLE001 - whatever stops the check is the answer: not ready
            problem = f"readiness check failed: {exc.__class__.__name__}"
        self.gauges.readiness(problem is None)
        if problem is not None:
            self._stop_exporting()  # its figures would go stale while another process takes the lease
        return problem

    def every_round(self) -> bool:
        # a worker of this server that died (killed, restarted by uvicorn) leaves its gauge samples behind
        forgotten = self.guarded("dead workers' samples", metrics.forget_dead_workers)
        return self.guarded("audit counters", lambda: self.audit_buffer.flush(self.database.sessions)) and forgotten

    def leader_round(self) -> bool:
        if not self.guarded("metrics election", self._elect_exporter):
            return False
        return not self.exporter or self.guarded("gauges", self._gauges)

    def _elect_exporter(self) -> None:
        try:
            with self.database.sessions() as db, db.begin():
                exporter = leases.take(db, METRICS_LEASE, self.holder, LEADER_LEASE_SECONDS)
        except BaseException:
            self._stop_exporting()  # unsure whether the lease is still ours: export nothing
            raise
        if exporter and not self.exporter:
            self.exporter, self.fresh = True, True
            logger.info("metrics_exporter=yes holder=%s", self.holder)
        elif not exporter:
            self._stop_exporting()

    def _stop_exporting(self) -> None:
        """Lost the lease, or cannot tell: set this process's fleet and push-queue gauges to 0 (neutral
        under ``max`` across nodes, outvoted by the exporter's next write within a node)."""
        if not self.exporter:
            return
        self.exporter = False
        self.gauges.clear()
        metrics.set_push_queue(0, 0.0)
        metrics.set_webhook_outbox(0, 0)
        logger.info("metrics_exporter=no holder=%s", self.holder)

    def _gauges(self) -> None:
        with self.database.read_sessions() as db:
            stats = queue_stats(db)
            outbox = outbox_stats(db)
        metrics.set_push_queue(stats["depth"], stats["oldest_age_seconds"])
        metrics.set_webhook_outbox(outbox["pending"], outbox["dead_last_hour"])
        # a new exporter computes at once; then at most every 15 s, the last values written every round
        if not self.gauges.maybe_refresh(self.database.read_sessions, force=self.fresh):
            self.gauges.publish()
        self.fresh = False

    def hand_over(self) -> None:
        super().hand_over()
        if self.exporter:
            self._stop_exporting()
            try:
                with self.database.sessions() as db, db.begin():
                    leases.release(db, METRICS_LEASE, self.holder)
            except (SQLAlchemyError, DatabaseUnavailable):
                pass  # it expires on its own


def _maintain(
    database: Database, settings: Settings, head: str, stop: threading.Event, holder: str, audit_buffer: AuditBuffer
) -> None:
    _Maintenance(database, settings, head, holder, audit_buffer).run(stop)


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
        webhooks = app.state.webhook_sender = WebhookSender(
            database.sessions, settings, observer=metrics.observe_webhook
        )
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
