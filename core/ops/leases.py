"""Leases: at most one holder of a named job at a time, across every process and node.

A lease is a row of ``leases``, taken and renewed by one conditional ``UPDATE`` (the row is created
first with ``INSERT ... ON CONFLICT DO NOTHING``): it succeeds for the current holder, or for anyone once
the lease has expired. Nothing is held on a connection between transactions, so leases work through
PgBouncer in transaction mode, where a session-level advisory lock would stay on whichever server
connection ran it. A holder that dies stops renewing; its lease passes on after ``ttl`` seconds.

Times come from the database's clock on PostgreSQL (nodes may disagree by a few seconds; the database
is one clock), from this process's on SQLite (one machine). Helpers never commit: the caller does, and
a lease counts only once that transaction has committed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.storage.dialect import is_postgresql
from core.storage.operations import rowcount
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.leases")

_PG_NOW = "statement_timestamp()"


def new_holder(role: str = "") -> str:
    """A holder id naming this process: host, pid, role and a random part (pids are reused)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{role}:{uuid.uuid4().hex[:8]}"[:128]


def _is_pg(db: Session) -> bool:
    return is_postgresql(db)


def take(db: Session, name: str, holder: str, ttl_seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``ttl_seconds``; True when ``holder`` has it now."""
    if _is_pg(db):
        params: dict[str, Any] = {"name": name, "holder": holder, "ttl": float(ttl_seconds)}
        expires = f"{_PG_NOW} + make_interval(secs => :ttl)"
        db.execute(
            text(
                f"INSERT INTO leases (name, holder, expires_at, taken_at) VALUES (:name, '', {_PG_NOW}, {_PG_NOW}) "
                "ON CONFLICT ON CONSTRAINT pk_leases DO NOTHING"
            ),
            params,
        )
        result = db.execute(
            text(
                f"UPDATE leases SET expires_at = {expires}, "
                f"taken_at = CASE WHEN holder = :holder THEN taken_at ELSE {_PG_NOW} END, holder = :holder "
                f"WHERE name = :name AND (holder = :holder OR expires_at <= {_PG_NOW})"
            ),
            params,
        )
        return rowcount(result) == 1
    now = utcnow()
    params = {"name": name, "holder": holder, "now": now, "expires": now + timedelta(seconds=ttl_seconds)}
    db.execute(
        text(
            "INSERT INTO leases (name, holder, expires_at, taken_at) VALUES (:name, '', :now, :now) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        {"name": name, "now": _sqlite_time(now)},
    )
    result = db.execute(
        text(
            "UPDATE leases SET expires_at = :expires, "
            "taken_at = CASE WHEN holder = :holder THEN taken_at ELSE :now END, holder = :holder "
            "WHERE name = :name AND (holder = :holder OR expires_at <= :now)"
        ),
        {k: _sqlite_time(v) if k in ("now", "expires") else v for k, v in params.items()},
    )
    return rowcount(result) == 1


def release(db: Session, name: str, holder: str) -> bool:
    """Give the lease up at once (only its holder can); True when it was held."""
    now = f"{_PG_NOW}" if _is_pg(db) else ":now"
    result = db.execute(
        text(f"UPDATE leases SET expires_at = {now} WHERE name = :name AND holder = :holder"),
        {"name": name, "holder": holder, "now": _sqlite_time(utcnow())},
    )
    return rowcount(result) == 1


def holder_of(db: Session, name: str) -> str | None:
    """Who holds ``name`` now (None when nobody or it expired)."""
    now = f"{_PG_NOW}" if _is_pg(db) else ":now"
    row = db.execute(
        text(f"SELECT holder FROM leases WHERE name = :name AND expires_at > {now}"),
        {"name": name, "now": _sqlite_time(utcnow())},
    ).first()
    return row[0] if row else None


def _sqlite_time(value: Any) -> Any:
    """The text UTCDateTime stores on SQLite (naive UTC, ISO format with a space), so comparisons order."""
    return (
        value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") if hasattr(value, "isoformat") else value
    )


class _Lost(threading.Event):
    """Set when a renewal finds the lease taken, and true by itself once the last successful take is a whole
    TTL old by this process's clock (no renewal thread has to run for a stalled holder to see it)."""

    def __init__(self, valid_until: float) -> None:
        super().__init__()
        self.valid_until = valid_until

    def is_set(self) -> bool:
        return super().is_set() or time.monotonic() >= self.valid_until


@contextmanager
def held(
    sessions: Callable[[], Session], name: str, *, ttl_seconds: float = 60.0, role: str = ""
) -> Iterator[threading.Event | None]:
    """Hold ``name`` while the block runs, renewed every ``ttl/3`` by a thread; ``None`` when another holds it.

    The yielded event is set once the lease may have passed to someone else: a renewal found another
    holder, or no renewal has succeeded for a whole ``ttl`` (a database outage, a process paused longer
    than the lease: its clock says so before its renewal thread has run again). A careful caller checks
    ``is_set()`` before each step and stops.
    """
    holder = new_holder(role)
    taken_at = time.monotonic()  # before the take: the lease lasts at least ttl from here
    with sessions() as db, db.begin():
        got = take(db, name, holder, ttl_seconds)
    if not got:
        yield None
        return
    lost = _Lost(taken_at + ttl_seconds)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_seconds / 3):
            attempted_at = time.monotonic()
            try:
                with sessions() as db, db.begin():
                    still = take(db, name, holder, ttl_seconds)
            except Exception as exc:  # noqa: BLE001 - keep trying until the lease runs out
                logger.warning("lease_renewal_failed name=%s error=%s", name, exc.__class__.__name__)
                continue
            if not still:
                lost.set()  # first: the holder may be waiting for either
                logger.warning("lease_lost name=%s holder=%s", name, holder)
                return
            lost.valid_until = attempted_at + ttl_seconds

    thread = threading.Thread(target=renew, name=f"nexmdm-lease-{name}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=5)
        try:
            with sessions() as db, db.begin():
                release(db, name, holder)
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            logger.warning("lease_release_failed name=%s error=%s", name, exc.__class__.__name__)
