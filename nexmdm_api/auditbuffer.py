"""Refusals counted in memory and written as aggregate audit rows, never one row per attempt.

A flood of bad admin keys (or of a viewer key hammering an operator endpoint) must not become a flood
of writes: each refusal adds one to a counter keyed by (actor, action, address, minute); the maintenance
loop writes the counters every few seconds as one upsert per key (``core.events.audit.record_denied``),
and the app writes what is left when it stops. The table of counters is bounded: past ``max_keys``,
new keys fold into one ``*`` key per action and minute.

Each row is written in a savepoint of its own: a row the database refuses (a value it cannot store, such
as the 70-character "address" a forwarded header once gave) is counted under its action's ``*`` key
instead, or dropped with a warning if even that is refused, and never holds the other rows back. Before,
it failed the whole batch, which was kept and retried forever: no refusal was written again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.events import audit
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.api")

#: the actor of a failed admin authentication (the address is in ``client_address``)
ANONYMOUS = "anonymous"
FAILED_AUTH = "auth.failed"

Key = tuple[str, str, str | None, datetime]


class AuditBuffer:
    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._counts: dict[Key, int] = {}
        self._lock = threading.Lock()

    def add(self, actor: str, action: str, address: str | None, now: datetime | None = None) -> None:
        key: Key = (actor, action, address, audit.minute(now or utcnow()))
        with self._lock:
            if key not in self._counts and len(self._counts) >= self.max_keys:
                key = ("*", action, "*", key[3])
            self._counts[key] = self._counts.get(key, 0) + 1

    def failed_auth(self, address: str | None) -> None:
        self.add(ANONYMOUS, FAILED_AUTH, address)

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def flush(self, sessions: sessionmaker[Session]) -> int:
        """Write the counters (one transaction); on failure they are kept for the next round."""
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return 0
        written = 0
        try:
            with sessions.begin() as db:
                for key, count in sorted(counts.items(), key=lambda item: item[0][3]):
                    written += _write(db, key, count)
        except Exception:
            with self._lock:
                for key, count in counts.items():
                    if key in self._counts or len(self._counts) < self.max_keys:
                        self._counts[key] = self._counts.get(key, 0) + count
            raise
        return written


#: what a refused row raises: a value the database will not store (too long, out of range, a check), or
#: one the driver cannot even send (text that is not UTF-8); a lost connection is none of these
_ROW_REFUSED = (DataError, IntegrityError, ValueError)


def _write(db: Session, key: Key, count: int) -> int:
    """Write one counter in a savepoint; returns the refusals written (0 when the row was dropped)."""
    actor, action, address, at = key
    for who, where in ((actor, address), ("*", "*")):
        try:
            with db.begin_nested():
                audit.record_denied(db, actor=who, action=action, address=where, at=at, count=count)
        except _ROW_REFUSED as exc:
            logger.warning(
                "audit_refusal_row_refused actor=%r action=%r address=%r count=%d error=%s",
                who[:80],
                action[:80],
                (where or "")[:80],
                count,
                exc.__class__.__name__,
            )
            continue
        return count
    return 0
