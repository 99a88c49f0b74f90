"""Alembic, driven through its Python API from any folder (the CLI and the tests use this)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from core.settings import normalize_database_url


def script_location() -> Path:
    """The migrations folder: installed as ``nexmdm_migrations``, else the repo's ``alembic/``."""
    # The folder has no __init__.py (a package named ``alembic`` would shadow the library), so it is a
    # namespace package: ask the import system for its locations rather than importlib.resources.files().
    spec = importlib.util.find_spec("nexmdm_migrations")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "env.py").is_file():
            return Path(location)
    return Path(__file__).resolve().parent.parent / "alembic"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    return cfg


def head_revision(database_url: str = "sqlite://") -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` when it has never been migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def partition_names(conn: Connection) -> set[str]:
    """Tables that are partitions (children of a partitioned table) on PostgreSQL."""
    if conn.dialect.name != "postgresql":
        return set()
    rows = conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"))
    return set(rows.scalars())


def compare_options(conn: Connection) -> dict[str, Any]:
    """Options for autogenerate and schema comparison: types compared, partitions ignored."""
    skipped = partition_names(conn)

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and reflected and compare_to is None and name in skipped)

    return {"compare_type": True, "include_object": include_object}
