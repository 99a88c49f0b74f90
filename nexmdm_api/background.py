"""Work a server process does besides answering requests, started and stopped with the app.

* **Maintenance** (every process): PostgreSQL heartbeat partitions for the coming week at start and then
  hourly, so ingestion never depends on cron alone; the expiry sweep of unacknowledged commands (with or
  without FCM); campaign releases, halts and completions (``core.fleet.run_due``, every second); the
  push-queue gauges and the readiness check every few seconds; the fleet-state gauges at most every 15 s
  (``nexmdm_api.fleet_metrics``).
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

from core import fleet, partitions
from core.delivery import DeliveryWorker, client_from_settings, queue_stats, sweep_expired
from core.errors import DatabaseUnavailable
from core.settings import Settings
from nexmdm_api import metrics
from nexmdm_api.db import Database
from nexmdm_api.fleet_metrics import FleetGauges
from nexmdm_api.routes.health import readiness

logger = logging.getLogger("nexmdm.api")

QUEUE_GAUGE_SECONDS = 5.0
PARTITIONS_EVERY_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 30.0
#: campaigns are checked this often (one indexed SELECT when none is running)
CAMPAIGN_EVERY_SECONDS = 1.0


def _maintain(database: Database, settings: Settings, head: str, stop: threading.Event) -> None:
    last_partitions = 0.0
    last_sweep = 0.0
    last_gauges = last_ready = 0.0
    gauges = FleetGauges(settings)
    while not stop.is_set():
        pause = CAMPAIGN_EVERY_SECONDS
        try:
            if time.monotonic() - last_ready >= QUEUE_GAUGE_SECONDS:  # first: it must see an outage
                problem, _ = readiness(database.read_engine, head)
                gauges.readiness(problem is None)
                last_ready = time.monotonic()
            if time.monotonic() - last_partitions >= PARTITIONS_EVERY_SECONDS or not last_partitions:
                with database.engine.begin() as conn:
                    created = partitions.ensure_ahead(conn)
                if created:
                    logger.info("created heartbeat partitions %s", ", ".join(created))
                last_partitions = time.monotonic()
            if time.monotonic() - last_sweep >= SWEEP_EVERY_SECONDS:
                sweep_expired(database.sessions, settings)
                last_sweep = time.monotonic()
            # campaign waves, halts and completions (idempotent across processes: the campaign row is locked)
            fleet.run_due(database.sessions, settings)
            if time.monotonic() - last_gauges >= QUEUE_GAUGE_SECONDS:
                with database.read_sessions() as db:
                    stats = queue_stats(db)
                metrics.set_push_queue(stats["depth"], stats["oldest_age_seconds"])
                gauges.maybe_refresh(database.read_sessions)
                last_gauges = time.monotonic()
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("maintenance could not use the database: %s", str(exc).splitlines()[0])
            pause = QUEUE_GAUGE_SECONDS
        except Exception:  # never end the thread: partitions ahead matter more than one failed round
            logger.exception("maintenance round failed")
            pause = QUEUE_GAUGE_SECONDS
        stop.wait(pause)


def background_lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database: Database = app.state.db
        metrics.declare()
        stop = threading.Event()
        maintenance = threading.Thread(
            target=_maintain,
            args=(database, settings, app.state.head_revision, stop),
            name="nexmdm-maintenance",
            daemon=True,
        )
        threads = [maintenance]
        worker = None
        if settings.delivery_in_server:
            client = client_from_settings(settings)
            if client is not None:
                worker = DeliveryWorker(database.sessions, settings, client, observer=metrics.observe_push)
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
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
            if worker is not None:
                worker.close()

    return lifespan
