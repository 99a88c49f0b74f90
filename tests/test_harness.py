"""The test harness reads NEXMDM_TEST_PG_URL the way the product reads NEXMDM_DATABASE_URL, and a skip
names the real reason (a missing driver is not "no server")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from tests.support.databases import database_url_for, postgres_problem

ROOT_DIR = Path(__file__).resolve().parents[1]


def _admin_url_with(value: str) -> str:
    code = "from tests.support.databases import PG_ADMIN_URL; print(PG_ADMIN_URL)"
    env = os.environ | {"NEXMDM_TEST_PG_URL": value}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT_DIR, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_readmes_url_form_means_psycopg2() -> None:
    assert _admin_url_with("postgresql://postgres@db.example:5433/postgres") == (
        "postgresql+psycopg2://postgres@db.example:5433/postgres"
    )
    assert _admin_url_with("postgres://postgres@db.example/postgres").startswith("postgresql+psycopg2://")


def test_test_databases_keep_the_admin_urls_options() -> None:
    url = database_url_for("nexmdm_test_x", "postgresql+psycopg2://u:secret@h:5433/postgres?sslmode=disable")
    parsed = make_url(url)
    assert (parsed.database, parsed.port, parsed.password, parsed.query) == (
        "nexmdm_test_x",
        5433,
        "secret",
        {"sslmode": "disable"},
    )


def test_a_skip_names_the_real_reason() -> None:
    missing = postgres_problem(ModuleNotFoundError("No module named 'psycopg'", name="psycopg"))
    assert "driver" in missing and "not installed" in missing and "psycopg" in missing
    engine = create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/x", connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError) as caught:
        engine.connect()
    reason = postgres_problem(caught.value, "postgresql+psycopg2://nobody:pw@127.0.0.1:1/x")
    assert reason.startswith("PostgreSQL is not reachable at") and ":pw@" not in reason
    assert "127.0.0.1" in reason and "OperationalError" not in reason  # the driver's words, not a class name
    assert "not a database URL" in postgres_problem(ArgumentError("Could not parse SQLAlchemy URL"))
