"""Fixtures: one ``engine`` parametrized over the real SQLite file and a real PostgreSQL database.

PostgreSQL tests skip when no server answers, except in CI (``CI=true``), where that is a failure.
Each test gets migrated tables that are emptied after it; a test run creates its own PostgreSQL
databases and drops them at the end.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.heartbeats import partitions
from core.models import Base
from core.storage.engine import make_engine, make_session_factory
from core.storage.migrations import alembic_config
from tests.support.databases import (
    BACKENDS,
    IN_CI,
    DatabaseFactory,
    add_device,
    migrate,
)
from tests.support.fakes.fcm import FakeFcm
from tests.support.pgcluster import Cluster

pytest_plugins = ["tests.support.api"]  # the API fixtures (``client``, credentials), for every folder


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("db"))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def migrated_urls(databases: DatabaseFactory) -> dict[str, str]:
    """One migrated database per backend for the whole run (created lazily)."""
    return {}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


#: database URL -> the UTC day its heartbeat partitions were last made ahead (a run may cross midnight UTC;
#: the databases are migrated once per run, as a server would be, and a server's maintenance loop keeps them ahead)
_partitions_day: dict[str, date] = {}


@pytest.fixture
def database_url(backend: str, databases: DatabaseFactory, migrated_urls: dict[str, str]) -> str:
    if backend not in migrated_urls:
        url = databases.create(backend)
        _partitions_day[url] = datetime.now(UTC).date()  # the migration makes them ahead of this day
        migrate(url)
        migrated_urls[backend] = url
    return migrated_urls[backend]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    today = datetime.now(UTC).date()
    if engine.dialect.name == "postgresql" and _partitions_day.get(settings.database_url) != today:
        with engine.begin() as conn:
            partitions.ensure_ahead(conn, today=today)
        _partitions_day[settings.database_url] = today
    yield engine
    _empty_tables(engine)
    engine.dispose()


def _empty_tables(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def session_factory(engine: Engine, settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(engine, settings)


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session
        session.rollback()


@pytest.fixture
def device(session_factory: sessionmaker[Session]) -> str:
    add_device(session_factory, "dev_001")
    return "dev_001"


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    """A migrated throwaway PostgreSQL cluster on a free port, for tests that stop and start it."""
    try:
        cluster = Cluster().init()
        cluster.start()
    except (FileNotFoundError, OSError, subprocess.CalledProcessError) as exc:
        message = f"cannot start a throwaway PostgreSQL cluster: {exc}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    command.upgrade(alembic_config(cluster.url), "head")
    yield cluster
    cluster.destroy()


@pytest.fixture
def fake_fcm() -> Iterator[FakeFcm]:
    """A fake FCM HTTP v1 + OAuth token server on loopback."""
    fake = FakeFcm().start()
    yield fake
    fake.stop()


#: fixtures that mean a test runs on a PostgreSQL server of its own
_PG_FIXTURES = {"pg_cluster", "pg_url"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers from where a test lives and what it runs on (``-m "not postgres"``, ``-m "not slow"``)."""
    for item in items:
        if "reliability" in item.path.parts:
            item.add_marker(pytest.mark.reliability)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend") == "postgresql" or _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
