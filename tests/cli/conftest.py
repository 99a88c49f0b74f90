"""CLI fixtures: ``nexmdm`` against the real databases of each backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.support.cli import Cli
from tests.support.databases import DatabaseFactory, migrate


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    # wide tables, so that assertions do not depend on where rich wraps a cell
    return {"NEXMDM_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


@pytest.fixture
def cli(database_url: str, engine: Engine, cli_env: dict[str, str]) -> Cli:
    """The CLI on the migrated database of this backend (``engine`` empties the tables afterwards)."""
    return Cli(database_url, cli_env)


@pytest.fixture
def fresh_url(backend: str, databases: DatabaseFactory) -> str:
    """A new, empty (unmigrated) database: for tests that migrate or damage the schema."""
    return databases.create(backend)


@pytest.fixture
def migrated_fresh_url(fresh_url: str) -> str:
    migrate(fresh_url)
    return fresh_url


@pytest.fixture
def fresh_cli(fresh_url: str, cli_env: dict[str, str]) -> Cli:
    return Cli(fresh_url, cli_env)
