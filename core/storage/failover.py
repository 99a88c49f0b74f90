"""Connections that a failover leaves behind are dropped, not reused.

After a primary dies and a standby is promoted, a pooled connection can be in one of three states:
dead (the old primary's postmaster is gone: psycopg2 says so and SQLAlchemy already invalidates it),
ended by the server (``57P01`` admin shutdown, ``57P02`` crash shutdown, ``57P03`` cannot connect now),
or alive on a server that no longer takes writes (``25006`` read-only transaction: a demoted primary
during a switchover, or pg_auto_failover's node that is promoted but still read-only). SQLAlchemy reads
only the first as a disconnect; this module marks all of them, so the pool discards the connection (and
every older one) and the next checkout connects again, where a multi-host URL with
``target_session_attrs=read-write`` finds the writable node. The request that met the error still fails:
``core.storage.dialect.from_database_error`` makes it :class:`~core.base.errors.DatabaseUnavailable` (a 503 with
``Retry-After``, exit 5), and the client retries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

#: SQLSTATEs after which a connection is not worth keeping (class 08 is every connection exception)
FAILOVER_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})


def is_failover_error(pgcode: str | None) -> bool:
    """Does a PostgreSQL error with this SQLSTATE mean the connection's server is gone or read-only?"""
    return pgcode is not None and (pgcode in FAILOVER_SQLSTATES or pgcode.startswith("08"))


def drop_connections_on_failover(engine: Engine) -> None:
    """Make ``engine`` treat the errors of :data:`FAILOVER_SQLSTATES` (and class 08) as disconnects."""

    @event.listens_for(engine, "handle_error")
    def _failover(context: Any) -> None:
        pgcode = getattr(context.original_exception, "pgcode", None)
        if not context.is_disconnect and is_failover_error(pgcode):
            context.is_disconnect = True
