"""What every command shares: settings, a lazily created engine, sessions and output helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from core.base.errors import DatabaseUnavailable
from core.base.settings import Settings, get_settings

if TYPE_CHECKING:  # imported where used: SQLAlchemy is not needed to print --help
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session, sessionmaker
    from typer._click.core import Context  # typer.Context's base (typer >= 0.29 runs its own copy of click)

#: messages for people go to stderr; stdout is for data (tables, or one JSON document with --json)
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


@dataclass
class CliState:
    database_url: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    _factory: sessionmaker[Session] | None = field(default=None, repr=False)
    _checked: bool = field(default=False, repr=False)
    _router: Any = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings(database_url=self.database_url)
        return self._settings

    @property
    def masked_url(self) -> str:
        from core.storage.engine import mask_url

        return mask_url(self.settings.database_url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from core.storage.engine import engine_from_settings

            self._engine = engine_from_settings(self.settings)
        return self._engine

    def require_database(self) -> None:
        """Fail with one line when the SQLite file does not exist: only ``db upgrade`` (and the commands that
        run it) may create the database; any other command would leave an empty file behind."""
        from core.storage.engine import sqlite_file

        path = sqlite_file(self.settings.database_url)
        if path is not None and not path.exists():
            raise DatabaseUnavailable(f"no database at {path}: create it with `nexmdm db upgrade`")

    def require_migrated(self) -> None:
        """Fail with one clear line when the database is unreachable or not at the current migration."""
        if self._checked:
            return
        from sqlalchemy.exc import OperationalError

        from core.storage.schema_version import current_revision, head_revision  # no Alembic: read the version table

        self.require_database()
        try:
            current = current_revision(self.engine)
        except OperationalError as exc:
            raise DatabaseUnavailable(f"cannot reach the database {self.masked_url}: {first_line(exc)}") from None
        head = head_revision()
        if current is None:
            raise DatabaseUnavailable(f"the database {self.masked_url} is not migrated: run `nexmdm db upgrade`")
        if current != head:
            raise DatabaseUnavailable(
                f"the database {self.masked_url} is at migration {current}, this NexMDM needs {head}: "
                "run `nexmdm db upgrade`"
            )
        self._checked = True

    @property
    def session_factory(self) -> sessionmaker[Session]:
        if self._factory is None:
            from core.storage.engine import make_session_factory

            self._factory = make_session_factory(self.engine, self.settings)
        return self._factory

    @contextmanager
    def session(self, *, migrated: bool = True) -> Iterator[Session]:
        """A session inside one transaction: committed when the block succeeds, rolled back otherwise."""
        if migrated:
            self.require_migrated()
        with self.session_factory.begin() as db:
            yield db

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """For listings and statistics: the replica (``NEXMDM_DATABASE_READ_URL``) while it is no further
        behind than ``NEXMDM_DATABASE_READ_MAX_LAG_SECONDS``, else the primary; a note on stderr says
        which when it matters (the replica is a second or more behind, or was passed over)."""
        settings = self.settings
        if not settings.database_read_url or settings.is_sqlite:
            with self.session() as db:
                yield db
            return
        self.require_migrated()
        if self._router is None:
            from core.storage.engine import make_session_factory
            from core.storage.replica import ReadRouter, replica_engine

            replica = make_session_factory(replica_engine(settings.database_read_url, pool_size=2), settings)
            self._router = ReadRouter(
                self.session_factory, replica, max_lag_seconds=settings.database_read_max_lag_seconds
            )
        route = self._router.route()
        if route.source == "replica" and route.lag_seconds and route.lag_seconds >= 1:
            info(f"[yellow]read from the replica, {route.lag_seconds:.1f} s behind the primary[/yellow]")
        elif route.source == "primary":
            info(f"[yellow]read from the primary: {route.reason}[/yellow]")
        with self._router.sessions(route).begin() as db:
            yield db

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """:meth:`read_session` without the ORM, for a listing written in Core (``nexmdm devices list``
        starts faster without importing it): a connection in one transaction on the primary, or, with a
        replica configured, the routed session's connection."""
        settings = self.settings
        if settings.database_read_url and not settings.is_sqlite:
            with self.read_session() as db:
                yield db.connection()
            return
        self.require_migrated()
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        if self._router is not None and self._router.replica is not None:
            self._router.replica.kw["bind"].dispose()
            self._router = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._factory = None


def state(ctx: Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    return value


def print_json(data: Any) -> None:
    """Exactly one JSON document on stdout."""
    typer.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=False))


def info(message: str) -> None:
    err_console.print(message)
