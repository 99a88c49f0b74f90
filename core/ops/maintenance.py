"""Maintenance duties shared by ``nexmdm serve`` and ``nexmdm worker`` (no web framework here).

Every process that runs it, every ``CAMPAIGN_EVERY_SECONDS``: the release of approved destructive actions
whose cooling-off delay is over (``core.approvals.release_due``; one conditional UPDATE each, so one process
releases each), then campaign releases, halts and completions (``core.campaigns.run_due``; idempotent
across processes: the campaign row is locked). Every
``ROUND_SECONDS`` a round: APK builds of the folder storage found on this node are imported once, the
``maintenance`` lease is taken or renewed (``core.ops.leases``: one leader among every process of every node,
whether it serves the API or only works), and PostgreSQL heartbeat partitions for the coming week are
kept (hourly, idempotent). The leader alone runs the expiry sweeps of unacknowledged commands and of
approvals nobody decided on within 24 h (``core.approvals.expire_due``), and the
presence sweep (``device.online``/``device.offline``, ``core.devices.presence``) every
``SWEEP_EVERY_SECONDS``; when it dies another process takes the lease within ``LEADER_LEASE_SECONDS``,
when it stops cleanly at once (:meth:`Maintenance.hand_over`).

``nexmdm_api.background`` extends :class:`Maintenance` with what only an API process has: readiness, its
audit trail's refusal counters and the ``/metrics`` gauges.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core import approvals
from core import campaigns as fleet
from core.apk import storage as apk_storage
from core.base.errors import DatabaseUnavailable
from core.base.settings import Settings
from core.commands.push.queue import sweep_expired
from core.devices import presence
from core.heartbeats import partitions
from core.ops import leases
from core.profiles.sweep import profile_sweep

logger = logging.getLogger("nexmdm.maintenance")

#: a maintenance round (readiness, the leader's lease, partitions, the leader's sweeps) this often
ROUND_SECONDS = 5.0
PARTITIONS_EVERY_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 30.0
#: campaigns are checked this often (one indexed SELECT when none is running)
CAMPAIGN_EVERY_SECONDS = 1.0
#: the leader renews its lease every round (``ROUND_SECONDS``); a dead leader's passes on after this
LEADER_LEASE_SECONDS = 30.0
LEADER_LEASE = "maintenance"


class Maintenance:
    """One maintenance round after another until stopped (see the module's docstring)."""

    def __init__(self, sessions: sessionmaker[Session], engine: Engine, settings: Settings, holder: str) -> None:
        self.sessions = sessions
        self.engine = engine
        self.settings = settings
        self.holder = holder
        self.leader = False
        self.last_round = 0.0
        self.imported = settings.apk_storage != "database"
        self.last_partitions = 0.0
        self.last_sweep = 0.0

    # ------------------------------------------------------------------------ hooks (the API's)

    def readiness(self) -> str | None:
        """Why this process should wait before a round (``None``: go on). The API checks its migration."""
        return None

    def every_round(self) -> bool:
        """Extra work of every round, before the election; True when it went well."""
        return True

    def leader_round(self) -> bool:
        """Extra work of every round after the leader's sweeps (leader or not); True when it went well."""
        return True

    # ------------------------------------------------------------------------------- the rounds

    def tick(self) -> bool:
        """Every ``CAMPAIGN_EVERY_SECONDS``: campaigns; every ``ROUND_SECONDS``: readiness, then a round.

        Each step is guarded on its own, so one that keeps failing (a bad APK file, an audit aggregate the
        database refuses) never stops campaigns, the leader's lease or the sweeps. Returns False when a
        step failed (the caller then waits longer before the next tick).
        """
        healthy = True
        if time.monotonic() - self.last_round >= ROUND_SECONDS or not self.last_round:
            self.last_round = time.monotonic()
            problem = self.readiness()  # first: it must see an outage
            if problem is not None:  # the database is unreachable or behind: one line, then wait
                logger.warning("maintenance waits: %s", problem)
                return False
            healthy = self.round()
        healthy = self.guarded("approvals", lambda: approvals.release_due(self.sessions, self.settings)) and healthy
        return self.guarded("campaigns", lambda: fleet.run_due(self.sessions, self.settings)) and healthy

    def guarded(self, step: str, work: Callable[[], Any]) -> bool:
        try:
            work()
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("maintenance %s could not use the database: %s", step, str(exc).splitlines()[0])
            return False
        except Exception:  # never end the thread: the other steps matter as much
            logger.exception("maintenance %s failed", step)
            return False
        return True

    def _import_apks(self) -> None:
        """Builds of the folder storage whose file is on this node go into the database, once per process
        (a file that fails is logged; its first download tries again)."""
        self.imported = True
        with self.sessions() as db, db.begin():
            ids = apk_storage.import_files(db, self.settings)
        if ids:
            logger.info("imported APK builds %s from %s into the database", ids, self.settings.apk_dir)

    def _partitions(self) -> None:
        if time.monotonic() - self.last_partitions >= PARTITIONS_EVERY_SECONDS or not self.last_partitions:
            with self.engine.begin() as conn:
                created = partitions.ensure_ahead(conn)
            if created:
                logger.info("created heartbeat partitions %s", ", ".join(created))
            self.last_partitions = time.monotonic()

    def round(self) -> bool:
        """Every process: APK import (once), the hooks, the leader's lease, partitions ahead. The leader
        also: the expiry and presence sweeps."""
        ok = True
        if not self.imported:
            ok = self.guarded("APK import", self._import_apks) and ok
        ok = self.every_round() and ok
        ok = self.guarded("leader election", self.elect) and ok
        ok = self.guarded("partitions", self._partitions) and ok
        if not self.leader:
            self.last_sweep = 0.0  # a new leader sweeps at once
        elif time.monotonic() - self.last_sweep >= SWEEP_EVERY_SECONDS:
            ok = self.guarded("expiry sweep", lambda: sweep_expired(self.sessions, self.settings)) and ok
            ok = self.guarded("approval expiry", lambda: approvals.expire_due(self.sessions)) and ok
            ok = self.guarded("presence sweep", lambda: presence.sweep(self.sessions, self.settings)) and ok
        if self.leader:  # every round: devices whose labels or inventory changed get their effective profile
            ok = self.guarded("profiles", lambda: profile_sweep(self.sessions, self.settings)) and ok
            self.last_sweep = time.monotonic()
        return self.leader_round() and ok

    def elect(self) -> None:
        """Take or renew the ``maintenance`` lease: one leader among every process of every node."""
        with self.sessions() as db, db.begin():
            is_leader = leases.take(db, LEADER_LEASE, self.holder, LEADER_LEASE_SECONDS)
        if is_leader != self.leader:
            logger.info("maintenance_leader=%s holder=%s", "yes" if is_leader else "no", self.holder)
            self.leader = is_leader

    def hand_over(self) -> None:
        """On a clean stop: release the lease at once, so that another process leads at its next round."""
        if not self.leader:
            return
        try:
            with self.sessions() as db, db.begin():
                leases.release(db, LEADER_LEASE, self.holder)
        except (SQLAlchemyError, DatabaseUnavailable):
            pass  # it expires on its own
        self.leader = False

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set, then hand the lease over; never raises."""
        while not stop.is_set():
            healthy = self.tick()  # every step guarded
            stop.wait(CAMPAIGN_EVERY_SECONDS if healthy else ROUND_SECONDS)
        self.hand_over()
