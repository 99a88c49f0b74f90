"""Read routing to a streaming replica (``NEXMDM_DATABASE_READ_URL``): admin listings and statistics.

Only reads that tolerate being a little behind go there: admin listings (devices, a device, its
heartbeats) and statistics. Everything devices do, everything that writes, and a read right after a write
(an admin polling the command it just created) stays on the primary. Credentials are always checked on
the primary: a key created a moment ago works at once and a revoked one stops at once.

A :class:`ReadRouter` measures the replica's lag (at most once a second per process) and sends a read to
the primary instead when the replica is further behind than ``NEXMDM_DATABASE_READ_MAX_LAG_SECONDS`` or
cannot be reached (logged once per outage); each routed read says where it went and how far behind the
data may be, so the API can put it in a response header and the CLI in a note.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("nexmdm.replica")

#: seconds behind the primary; 0 when the replica has replayed everything it received (an idle primary
#: sends nothing, and the last replayed transaction's age would grow without the data being stale)
LAG_SQL = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
MEASURE_EVERY_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class Route:
    """Where a read goes: ``source`` is ``replica`` or ``primary``; ``lag_seconds`` the replica's lag when
    measured (None when there is no replica or it could not be reached); ``reason`` why the primary."""

    source: str
    lag_seconds: float | None
    reason: str = ""


class ReadRouter:
    def __init__(
        self, primary: sessionmaker[Session], replica: sessionmaker[Session] | None, *, max_lag_seconds: float
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_seconds = max_lag_seconds
        self._lag: float | None = None
        self._measured = 0.0
        self._down = False
        self._lock = threading.Lock()

    def route(self) -> Route:
        if self.replica is None:
            return Route("primary", None, "no replica configured")
        lag = self.lag()
        if lag is None:
            return Route("primary", None, "replica unreachable")
        if lag > self.max_lag_seconds:
            return Route("primary", lag, f"replica {lag:.1f} s behind (over {self.max_lag_seconds:g} s)")
        return Route("replica", lag)

    def sessions(self, route: Route) -> sessionmaker[Session]:
        return self.replica if route.source == "replica" and self.replica is not None else self.primary

    def lag(self) -> float | None:
        """The replica's lag in seconds (cached for ``MEASURE_EVERY_SECONDS``), None when unreachable."""
        now = time.monotonic()
        with self._lock:
            wait = RETRY_AFTER_SECONDS if self._down else MEASURE_EVERY_SECONDS
            if self._measured and now - self._measured < wait:
                return self._lag
            self._measured = now
        assert self.replica is not None
        try:
            with self.replica() as db:
                lag: float | None = float(db.execute(text(LAG_SQL)).scalar_one())
            if self._down:
                logger.warning("replica_available: admin reads go to the replica again")
            self._down = False
        except Exception as exc:  # noqa: BLE001 - any failure: read from the primary
            if not self._down:
                logger.warning("replica_unavailable error=%s: admin reads go to the primary", exc.__class__.__name__)
            self._down = True
            lag = None
        with self._lock:
            self._lag = lag
        return lag


def replica_engine(url: str, *, pool_size: int, connect_timeout: int = 2, **kwargs: Any) -> Engine:
    from core.storage.engine import make_engine

    return make_engine(
        url,
        pool_size=pool_size,
        connect_args={"connect_timeout": connect_timeout, "application_name": "nexmdm-read"},
        **kwargs,
    )
