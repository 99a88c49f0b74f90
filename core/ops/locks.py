"""A maintenance lock so that two cleanups never both delete, on one node or several.

PostgreSQL: a lease (``core.ops.leases``: a row taken by a conditional UPDATE and renewed while the cleanup
runs; a dead holder's lease passes on after ``LEASE_SECONDS``). Unlike a session-level advisory lock it
holds nothing on a connection between transactions, so it also works through PgBouncer in transaction
mode. SQLite (one machine): an exclusive ``flock`` on a file beside the database (also released if the
process dies); the database's own write lock cannot be held across the cleanup's per-batch commits.

A lease can be lost while its holder still runs (a stalled node, a long pause, an outage longer than the
lease): :meth:`Held.lost` then turns true, and a careful holder stops at its next step rather than go on
beside the new holder. A ``flock`` is never lost.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from core.storage.dialect import is_postgresql

#: a crashed cleanup's lease passes on after this long; a live one renews it every third of it
LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Held:
    """What :func:`maintenance_lock` yields: true when this process holds the lock."""

    held: bool
    #: set when the lease may have passed to another holder: a renewal found another, or none succeeded for a
    #: whole lease (PostgreSQL only)
    lost_event: threading.Event | None = None

    def __bool__(self) -> bool:
        return self.held

    def lost(self) -> bool:
        """True once the lock may belong to someone else: stop before the next step."""
        return self.lost_event is not None and self.lost_event.is_set()


def lock_holder(engine: Engine, name: str = "cleanup") -> str | None:
    """Who holds the maintenance lock ``name`` (``host:pid:role:random``) on PostgreSQL; None elsewhere."""
    if not is_postgresql(engine):
        return None
    from sqlalchemy.orm import Session

    from core.ops import leases

    with Session(engine) as db:
        return leases.holder_of(db, f"maintenance:{name}")


@contextmanager
def maintenance_lock(engine: Engine, name: str = "cleanup") -> Iterator[Held]:
    """Try to take the lock without waiting; yields a :class:`Held`, true when this process holds it."""
    if is_postgresql(engine):
        from sqlalchemy.orm import sessionmaker

        from core.ops import leases

        with leases.held(sessionmaker(engine), f"maintenance:{name}", ttl_seconds=LEASE_SECONDS, role=name) as lost:
            yield Held(lost is not None, lost)
        return
    database = engine.url.database
    lock_path = Path(f"{database}.{name}.lock") if database and database != ":memory:" else None
    if lock_path is None:
        yield Held(True)
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield Held(False)
            return
        try:
            yield Held(True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
