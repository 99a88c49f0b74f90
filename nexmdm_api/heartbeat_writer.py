"""Group commit for heartbeats on PostgreSQL: the beats that arrive together are stored by one statement.

A handler validates its beat on the event loop and hands it to this process's writer thread, which takes
every beat waiting (at most one per device token; a second beat of the same device waits for the next
batch) and stores them with ``core.heartbeats.store.store_beats``: one round trip and one commit for the whole
batch, instead of three thread hops and a round trip per request. Batches form by themselves: while one
statement runs, the next beats queue up; a lone beat is stored at once, nothing waits for a batch to fill.

Nothing is acknowledged before its statement has committed, and a statement either stores its whole
batch or nothing. A batch that the database refuses as a whole for a value (should validation ever miss
one) is retried beat by beat so that one bad beat cannot fail the others. The writer holds one pooled
connection in autocommit (no pre-ping per batch); after a database error it drops it and takes a fresh
one, so an outage costs each waiting request a fast 503 and the writer recovers with the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from core.base.errors import DatabaseUnavailable, NexMDMError
from core.base.settings import Settings
from core.heartbeats.store import Beat, store_beats
from nexmdm_api.metrics import observe_heartbeat_batch

logger = logging.getLogger("nexmdm.api")

#: beats stored by one statement at most
MAX_BATCH = 256
#: beats waiting at most; past that a heartbeat is answered 503 at once (the database cannot keep up)
MAX_QUEUED = 10_000
#: longest a request waits for its beat to be stored before it is a 503 (it may still be stored: a retry
#: of the same beat is deduplicated by its bucket)
WAIT_SECONDS = 4.0
#: the writer's statements wait at most this long for a lock and run at most this long: one device's
#: locked row (an enrollment, a revocation) or a migration queued on a table must not hold every other
#: device's heartbeats past ``WAIT_SECONDS``
LOCK_TIMEOUT_MS = 1000
STATEMENT_TIMEOUT_MS = 3000
#: a held connection idle longer than this goes back to the pool, whose check-out pings it
IDLE_RELEASE_SECONDS = 1.0

_Item = tuple[Beat, "asyncio.Future[dict[str, Any]]"]
_Outcome = dict[str, Any] | BaseException


class HeartbeatWriter:
    """One thread per server process that stores waiting heartbeats in batches."""

    def __init__(self, engine: Engine, settings: Settings, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.settings = settings
        self.max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue(MAX_QUEUED)
        self._conn: Connection | None = None
        self._thread = threading.Thread(target=self._run, name="nexmdm-heartbeat-writer", daemon=True)

    def start(self) -> HeartbeatWriter:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop (the lifespan calls it before the engine is disposed)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if not self._thread.is_alive():  # else the thread still owns its connection; the engine disposal ends it
            self._drop_connection()

    async def store(self, beat: Beat) -> dict[str, Any]:
        """Store one beat (through the next batch); returns its outcome or raises its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        try:
            self._queue.put_nowait((beat, future))
        except queue.Full:
            raise DatabaseUnavailable("the database cannot keep up with heartbeats right now") from None
        try:
            return await asyncio.wait_for(future, WAIT_SECONDS)
        except TimeoutError:
            raise DatabaseUnavailable("the database did not store the heartbeat in time") from None

    # ---------------------------------------------------------------------------------- writer thread

    def _run(self) -> None:
        carry: deque[_Item] = deque()  # beats of a device that already had one in the batch, in arrival order
        stopping = False
        item: _Item | None  # None: the signal to stop
        while not (stopping and not carry):
            batch = _Batch(self.max_batch)
            for _ in range(len(carry)):
                item = carry.popleft()
                if not batch.take(item):
                    carry.append(item)
            if not batch.items and not stopping:
                try:
                    item = self._queue.get(timeout=IDLE_RELEASE_SECONDS)
                except queue.Empty:
                    self._drop_connection()  # idle: back to the pool, which pings it at the next check-out
                    item = self._queue.get()  # wait for work
                if item is None:
                    stopping = True
                else:
                    batch.take(item)
            while not stopping and not batch.full:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                elif not batch.take(item):
                    carry.append(item)
            if batch.items:
                self._store_guarded(batch.items)

    def _store_guarded(self, batch: list[_Item]) -> None:
        """``_store``, and whatever it raises settles the batch: the writer thread must never die."""
        try:
            self._store(batch)
        except BaseException as exc:  # settle every waiting request, keep the thread alive
            logger.exception("heartbeat writer: a batch failed unexpectedly")
            self._settle_all(batch, [exc] * len(batch))

    def _store(self, batch: list[_Item]) -> None:
        with contextlib.suppress(Exception):  # a metrics failure must not cost the beats
            observe_heartbeat_batch(len(batch))
        beats = [beat for beat, _ in batch]
        outcomes: list[_Outcome]
        try:
            outcomes = list(self._execute(beats))
        except (DataError, IntegrityError) as exc:
            if len(batch) == 1:
                outcomes = [exc]
            else:
                logger.warning("a heartbeat batch was refused (%s); storing its beats one by one", type(exc).__name__)
                outcomes = [self._one(beat) for beat in beats]
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error (a 503 for the database)
            outcomes = [exc] * len(batch)
        self._settle_all(batch, outcomes)

    @staticmethod
    def _settle_all(batch: list[_Item], outcomes: list[_Outcome]) -> None:
        # one wake-up of each event loop per batch, not one per beat
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[dict[str, Any]], _Outcome]]] = {}
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, outcome))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, settled)

    def _one(self, beat: Beat) -> _Outcome:
        try:
            return self._execute([beat])[0]
        except Exception as exc:  # noqa: BLE001 - the request gets the error
            return exc

    def _execute(self, beats: list[Beat]) -> list[dict[str, Any] | NexMDMError]:
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
            # the limits travel with the statement (SET LOCAL): no session state, PgBouncer-safe
            return store_beats(self._conn, beats, self.settings, timeouts_ms=(LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS))
        except DBAPIError as exc:
            if exc.connection_invalidated or not isinstance(exc, (DataError, IntegrityError, OperationalError)):
                self._drop_connection()  # broken: the next batch takes a fresh connection
            elif self._conn is not None:
                self._conn.rollback()  # a refused statement (autocommit: SQLAlchemy's bookkeeping only)
            raise
        except Exception:
            self._drop_connection()  # an unknown state: the next batch takes a fresh connection
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
                with contextlib.suppress(Exception):
                    conn.invalidate()
                    conn.close()


class _Batch:
    """Beats stored by one statement: at most ``size``, at most one per device token."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[_Item] = []
        self.tokens: set[str] = set()

    @property
    def full(self) -> bool:
        return len(self.items) >= self.size

    def take(self, item: _Item) -> bool:
        """Add a beat; False when it must wait for a later batch. A beat nobody waits for is dropped."""
        if item[1].done():  # its request already got its answer (a 503 after WAIT_SECONDS): not stored
            return True
        if self.full or item[0].token_hash in self.tokens:
            return False
        self.tokens.add(item[0].token_hash)
        self.items.append(item)
        return True


def _settle(settled: list[tuple[asyncio.Future[dict[str, Any]], _Outcome]]) -> None:
    """On the event loop: hand each waiting request its outcome (unless it gave up waiting)."""
    for future, outcome in settled:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
