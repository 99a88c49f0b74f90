"""Alembic environment shared by `alembic` (repo root) and `nexmdm db` (anywhere).

The URL comes from the config's ``sqlalchemy.url`` when the CLI sets it, else from the NexMDM settings
(``NEXMDM_DATABASE_URL`` or the embedded SQLite file). SQLite uses batch mode with foreign keys off while
tables are rebuilt; PostgreSQL partitions (children of a partitioned table) are ignored by autogenerate.

On PostgreSQL every statement runs under a short ``lock_timeout`` (``NEXMDM_MIGRATION_LOCK_TIMEOUT_MS``, or
the config attribute ``lock_timeout_ms``), so a migration waiting for a busy table gives up instead of
queueing the heartbeat path behind it; ``nexmdm db upgrade`` retries. Each migration is its own
transaction, so a retry resumes where the last attempt stopped, and a migration may use an autocommit
block (``CREATE INDEX CONCURRENTLY``, see ``core.storage.migrations.create_index_concurrently``).

Through PgBouncer in transaction mode (``NEXMDM_DATABASE_POOL_MODE=transaction``, or the config attribute
``pool_mode``) there is no session to configure: PgBouncer refuses the ``options`` startup parameter, so
the limit is set with ``SET LOCAL`` at the start of every transaction instead, and autocommit blocks run
under the server's default (the concurrent index builds they hold conflict with no write).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import make_url
from core.storage.engine import TRANSACTION_POOLING, make_engine
from core.storage.migrations import compare_options
from core.models import Base
from core.base.settings import get_settings, normalize_database_url

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    return normalize_database_url(url) if url else get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = _database_url()
    kwargs = {}
    if url.startswith("postgresql"):
        lock_timeout_ms = config.attributes.get("lock_timeout_ms")
        if lock_timeout_ms is None:
            lock_timeout_ms = get_settings().migration_lock_timeout_ms
        pooled = (config.attributes.get("pool_mode") or get_settings().database_pool_mode) == "transaction"
        kwargs["connect_args"] = {"connect_timeout": 10, "application_name": "nexmdm-migrate"}
        if pooled:
            kwargs["execution_options"] = {TRANSACTION_POOLING: True}
        else:
            options = f"-c lock_timeout={int(lock_timeout_ms)}"
            # connect_args' options replace the URL's (?options=-csearch_path=...): keep those too
            from_url = make_url(url).query.get("options")
            if from_url:
                options = f"{from_url if isinstance(from_url, str) else ' '.join(from_url)} {options}"
            kwargs["connect_args"]["options"] = options
    engine = make_engine(url, sqlite_foreign_keys=False, **kwargs)
    if kwargs.get("execution_options"):

        @event.listens_for(engine, "begin")
        def _limit_transaction(conn) -> None:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")

    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:
    options = compare_options(connection)
    external = config.attributes.get("connection") is not None
    if not external and connection.in_transaction():
        connection.commit()  # the catalog query above began one; Alembic must own the transactions
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
