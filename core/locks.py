"""A maintenance lock so that two cleanups never both delete.

PostgreSQL: a session-level advisory lock on a dedicated connection (released if the process dies).
SQLite: an exclusive ``flock`` on a file beside the database (also released if the process dies); the
database's own write lock cannot be held across the cleanup's per-batch commits.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"nexmdm:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def maintenance_lock(engine: Engine, name: str = "cleanup") -> Iterator[bool]:
    """Try to take the lock without waiting; yields True when this process holds it."""
    if engine.dialect.name == "postgresql":
        key = _advisory_key(name)
        with engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    database = engine.url.database
    lock_path = Path(f"{database}.{name}.lock") if database and database != ":memory:" else None
    if lock_path is None:
        yield True
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
