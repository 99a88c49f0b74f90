"""Work a server process does besides answering requests, started and stopped with the app.

* **Maintenance**: every process keeps PostgreSQL heartbeat partitions for the coming week (at start and
  then hourly, idempotent), so ingestion never depends on cron alone. One process among every node, the
  maintenance leader (the holder of the ``maintenance`` lease, ``core.leases``), runs the expiry sweep
  of unacknowledged commands and exports the push-queue gauges; when it dies another process takes the
  lease within ``LEADER_LEASE_SECONDS``.
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

from core import apk_storage, leases, partitions
from core.delivery import DeliveryWorker, client_from_settings, queue_stats, sweep_expired
from core.errors import DatabaseUnavailable
from core.settings import Settings
from nexmdm_api import metrics
from nexmdm_api.db import Database

logger = logging.getLogger("nexmdm.api")

QUEUE_GAUGE_SECONDS = 5.0
PARTITIONS_EVERY_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 30.0
#: the leader renews its lease every round (``QUEUE_GAUGE_SECONDS``); a dead leader's passes on after this
LEADER_LEASE_SECONDS = 30.0
LEADER_LEASE = "maintenance"


def _maintain(database: Database, settings: Settings, stop: threading.Event, holder: str) -> None:
    last_partitions = 0.0
    last_sweep = 0.0
    leader = False
    imported = settings.apk_storage != "database"
    while not stop.is_set():
        try:
            if not imported:  # builds of the folder storage whose file is on this node: into the database
                with database.sessions() as db, db.begin():
                    ids = apk_storage.import_files(db, settings)
                if ids:
                    logger.info("imported APK builds %s from %s into the database", ids, settings.apk_dir)
                imported = True

            with database.sessions() as db, db.begin():
                is_leader = leases.take(db, LEADER_LEASE, holder, LEADER_LEASE_SECONDS)
            if is_leader != leader:
                logger.info("maintenance_leader=%s holder=%s", "yes" if is_leader else "no", holder)
                leader = is_leader

            if time.monotonic() - last_partitions >= PARTITIONS_EVERY_SECONDS or not last_partitions:
                with database.engine.begin() as conn:
                    created = partitions.ensure_ahead(conn)
                if created:
                    logger.info("created heartbeat partitions %s", ", ".join(created))
                last_partitions = time.monotonic()
            if not leader:
                last_sweep = 0.0  # a new leader sweeps at once
            else:
                if time.monotonic() - last_sweep >= SWEEP_EVERY_SECONDS:
                    sweep_expired(database.sessions, settings)
                    last_sweep = time.monotonic()
                with database.read_sessions() as db:
                    stats = queue_stats(db)
                metrics.set_push_queue(stats["depth"], stats["oldest_age_seconds"])
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("maintenance could not use the database: %s", str(exc).splitlines()[0])
        except Exception:  # never end the thread: partitions ahead matter more than one failed round
            logger.exception("maintenance round failed")
        stop.wait(QUEUE_GAUGE_SECONDS)
    if leader:  # hand over at once on a clean stop
        try:
            with database.sessions() as db, db.begin():
                leases.release(db, LEADER_LEASE, holder)
        except (SQLAlchemyError, DatabaseUnavailable):
            pass


def background_lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database: Database = app.state.db
        stop = threading.Event()
        app.state.maintenance_holder = holder = leases.new_holder("api")
        maintenance = threading.Thread(
            target=_maintain, args=(database, settings, stop, holder), name="nexmdm-maintenance", daemon=True
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
