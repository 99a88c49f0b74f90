"""Which migration the database is at and which one this code needs, without importing Alembic.

Every CLI command checks both before touching data; importing Alembic for that would double the
command's start-up time. The revision ids are read from the version table Alembic keeps and from the
``revision``/``down_revision`` lines of the migration files; ``tests/core/test_storage_migrations.py`` pins
that the answers are Alembic's own.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

_REVISION = re.compile(r"""^revision(?:\s*:[^=]*)?\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_DOWN = re.compile(r"""^down_revision(?:\s*:[^=]*)?\s*=\s*(.+)$""", re.MULTILINE)
_IDS = re.compile(r"""["']([^"']+)["']""")


def script_location() -> Path:
    """The migrations folder: installed as ``nexmdm_migrations``, else the repo's ``alembic/``."""
    # The folder has no __init__.py (a package named ``alembic`` would shadow the library), so it is a
    # namespace package: ask the import system for its locations rather than importlib.resources.files().
    spec = importlib.util.find_spec("nexmdm_migrations")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "env.py").is_file():
            return Path(location)
    return Path(__file__).resolve().parent.parent / "alembic"


def _read(folder: Path | None) -> tuple[set[str], set[str]]:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(((folder or script_location()) / "versions").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        revision = _REVISION.search(source)
        if revision is None:
            continue
        revisions.add(revision.group(1))
        down = _DOWN.search(source)
        if down is not None:
            parents.update(_IDS.findall(down.group(1)))
    return revisions, parents


def known_revisions(folder: Path | None = None) -> set[str]:
    """Every migration this code has (a database at another one was migrated by a newer NexMDM)."""
    return _read(folder)[0]


def head_revision(folder: Path | None = None) -> str | None:
    """The newest migration (the one no other migration names as its ``down_revision``)."""
    revisions, parents = _read(folder)
    heads = sorted(revisions - parents)
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have several heads: {', '.join(heads)}")
    return heads[0] if heads else None


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` when it has never been migrated."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(versions) > 1:
        raise RuntimeError(f"the database is at several heads: {', '.join(sorted(versions))}")
    return versions[0] if versions else None
