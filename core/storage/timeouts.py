"""Bounded waits on PostgreSQL: maintenance work (retention cleanup) and reads by selector.

Each transaction of a cleanup starts with ``SET LOCAL lock_timeout`` and ``SET LOCAL statement_timeout``
(``NEXMDM_CLEANUP_LOCK_TIMEOUT_MS``, ``NEXMDM_CLEANUP_STATEMENT_TIMEOUT_MS``); the partition steps, which
run outside a transaction block, set the same limits on their connection. A cleanup statement therefore
never waits long for a lock (while it waits, whatever needs a conflicting lock queues behind it) and
never runs long. A step that times out is rolled back and tried again after an exponential backoff
with jitter, at most ``NEXMDM_CLEANUP_RETRIES`` times; then the cleanup stops with
:class:`core.base.errors.LockTimeout`, keeping what its committed batches already deleted.

A read that evaluates a selector (a device listing, ``nexmdm top --selector``, a dry run) runs its
selector statements under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` (:func:`selector_reads`): a selector
whose terms have no index reads every device, and such a read must not run on unboundedly. Writes by
selector (a campaign's snapshot, bulk labels) are not limited: a change to the whole fleet may take longer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.base.errors import LockTimeout, SelectorTooSlow
from core.base.settings import Settings
from core.storage.dialect import is_postgresql

logger = logging.getLogger("nexmdm.cleanup")

T = TypeVar("T")

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout fired (SQLSTATE lock_not_available)
QUERY_CANCELED = "57014"  # statement_timeout fired, or the statement was cancelled
BACKOFF_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


@dataclass(frozen=True)
class Limits:
    lock_timeout_ms: int
    statement_timeout_ms: int
    retries: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.cleanup_lock_timeout_ms, settings.cleanup_statement_timeout_ms, settings.cleanup_retries)


def timeout_kind(exc: BaseException) -> str | None:
    """``"lock_timeout"`` or ``"statement_timeout"`` when a database error is one of them, else None."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "pgcode", None)
    if code == LOCK_NOT_AVAILABLE:
        return "lock_timeout"
    if code == QUERY_CANCELED and "statement timeout" in str(orig):
        return "statement_timeout"
    return None


def set_local(db: Session | Connection, limits: Limits) -> None:
    """Both limits for the rest of the current transaction (PostgreSQL only; one round trip)."""
    bind = db.get_bind() if isinstance(db, Session) else db
    if not is_postgresql(bind):
        return
    db.execute(
        text("SELECT set_config('lock_timeout', :lock, true), set_config('statement_timeout', :statement, true)"),
        {"lock": f"{int(limits.lock_timeout_ms)}ms", "statement": f"{int(limits.statement_timeout_ms)}ms"},
    )


def retrying(
    step: Callable[[], T],
    *,
    limits: Limits,
    entity: str,
    what: str,
    on_timeout: Callable[[str], None],
) -> T:
    """Run ``step``; after a lock or statement timeout, ``on_timeout(kind)`` (roll back) and try again.

    Raises :class:`LockTimeout` once ``limits.retries`` retries have timed out too; any other error
    propagates at once.
    """
    attempt = 1
    while True:
        started = time.perf_counter()
        try:
            return step()
        except OperationalError as exc:
            kind = timeout_kind(exc)
            if kind is None:
                raise
            on_timeout(kind)
            limit = limits.lock_timeout_ms if kind == "lock_timeout" else limits.statement_timeout_ms
            if attempt > limits.retries:
                raise LockTimeout(
                    f"{entity}: {what} hit its {kind.replace('_', ' ')} ({limit} ms) {attempt} times "
                    "(another transaction holds a conflicting lock, or the database is overloaded)"
                ) from None
            delay = min(BACKOFF_MAX_SECONDS, BACKOFF_SECONDS * 2 ** (attempt - 1))
            logger.info(
                "cleanup_retry entity=%s step=%r reason=%s attempt=%d latency_ms=%.1f backoff_s=%.2f",
                entity,
                what,
                kind,
                attempt,
                (time.perf_counter() - started) * 1000,
                delay,
            )
            time.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not a secret
            attempt += 1


#: one round trip: the current limit (ms; 0 is none) and the selector's, unless the current one is stricter
_TIGHTEN = text(
    "SELECT s.setting, set_config('statement_timeout', "
    "(CASE WHEN s.setting::int BETWEEN 1 AND :ms THEN s.setting::int ELSE :ms END) || 'ms', true) "
    "FROM pg_settings s WHERE s.name = 'statement_timeout'"
)
_RESTORE = text("SELECT set_config('statement_timeout', :ms || 'ms', true)")


@contextmanager
def selector_reads(db: Session | Connection, settings: Settings, selector: str | None = None) -> Iterator[None]:
    """Run the block's statements under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` (PostgreSQL; ``0``: none).

    ``set_config(..., true)`` is local to the transaction, so it is PgBouncer-safe (transaction pooling);
    the limit in force before (the server's or the role's, kept when it is stricter) is restored after the
    block. A statement cancelled by the limit raises :class:`SelectorTooSlow` (the transaction is then
    aborted: the caller rolls it back). On SQLite the block runs unlimited.
    """
    limit = int(settings.selector_statement_timeout_ms)
    if not is_postgresql(db) or limit <= 0:
        yield
        return
    before = db.execute(_TIGHTEN, {"ms": limit}).scalar_one()
    effective = int(before) if 1 <= int(before) <= limit else limit  # a stricter limit of the role stays
    try:
        yield
    except OperationalError as exc:
        if timeout_kind(exc) != "statement_timeout":
            raise
        which = f"the selector {selector!r}" if selector else "the selector"
        raise SelectorTooSlow(
            f"{which} ran past its {effective} ms time limit ({_limit_source(effective, limit)}): it reads too "
            "much of the fleet; narrow it with a label, @state or an @agent_version comparison "
            "(docs/campaigns.md#selectors)",
            limit_ms=effective,
        ) from exc
    db.execute(_RESTORE, {"ms": int(before)})


def _limit_source(effective: int, configured: int) -> str:
    if effective < configured:
        return "the database's statement_timeout, stricter than NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS"
    return "NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS"
