"""Alembic environment shared by `alembic` (repo root) and `nexmdm db` (anywhere).

The URL comes from the config's ``sqlalchemy.url`` when the CLI sets it, else from the NexMDM settings
(``NEXMDM_DATABASE_URL`` or the embedded SQLite file). SQLite uses batch mode with foreign keys off while
tables are rebuilt; PostgreSQL partitions (children of a partitioned table) are ignored by autogenerate.
"""

from __future__ import annotations

from alembic import context
from core.db import make_engine
from core.migrations import compare_options
from core.models import Base
from core.settings import get_settings, normalize_database_url

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
    engine = make_engine(_database_url(), sqlite_foreign_keys=False)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        **compare_options(connection),
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
