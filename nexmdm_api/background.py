"""Work a server process does besides answering requests, started and stopped with the app.

* **Maintenance** (every process): PostgreSQL heartbeat partitions for the coming week at start and then
  hourly, so ingestion never depends on cron alone; the expiry sweep of unacknowledged commands (with or
  without FCM); device presence (``device.online``/``device.offline``, ``core.events.presence``); the
  push-queue gauges every few seconds; the audit trail's refusal counters.
* **Webhooks** (every process): a ``WebhookSender`` delivering the webhook outbox in its own threads.
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

from core import partitions
from core.delivery import DeliveryWorker, client_from_settings, queue_stats, sweep_expired
from core.errors import DatabaseUnavailable
from core.events import presence
from core.events.delivery import WebhookSender
from core.settings import Settings
from nexmdm_api import metrics
from nexmdm_api.auditbuffer import AuditBuffer
from nexmdm_api.db import Database

logger = logging.getLogger("nexmdm.api")

QUEUE_GAUGE_SECONDS = 5.0
PARTITIONS_EVERY_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 30.0
WEBHOOK_POLL_SECONDS = 1.0


def _maintain(database: Database, settings: Settings, stop: threading.Event, audit_buffer: AuditBuffer) -> None:
    last_partitions = 0.0
    last_sweep = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() - last_partitions >= PARTITIONS_EVERY_SECONDS or not last_partitions:
                with database.engine.begin() as conn:
                    created = partitions.ensure_ahead(conn)
                if created:
                    logger.info("created heartbeat partitions %s", ", ".join(created))
                last_partitions = time.monotonic()
            if time.monotonic() - last_sweep >= SWEEP_EVERY_SECONDS:
                sweep_expired(database.sessions, settings)
                presence.sweep(database.sessions, settings)
                last_sweep = time.monotonic()
            with database.read_sessions() as db:
                stats = queue_stats(db)
            metrics.set_push_queue(stats["depth"], stats["oldest_age_seconds"])
            audit_buffer.flush(database.sessions)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("maintenance could not use the database: %s", str(exc).splitlines()[0])
        except Exception:  # never end the thread: partitions ahead matter more than one failed round
            logger.exception("maintenance round failed")
        stop.wait(QUEUE_GAUGE_SECONDS)


def background_lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database: Database = app.state.db
        stop = threading.Event()
        maintenance = threading.Thread(
            target=_maintain,
            args=(database, settings, stop, app.state.audit_buffer),
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
        webhooks = app.state.webhook_sender = WebhookSender(database.sessions, settings)
        threads.append(
            threading.Thread(
                target=webhooks.run,
                args=(stop, WEBHOOK_POLL_SECONDS),
                name="nexmdm-webhooks",
                daemon=True,
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
