"""Multi-host PostgreSQL URLs (libpq's form) and the connection string the PostgreSQL tools get."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from core.base.settings import Settings, normalize_database_url
from core.ops.pg_backup import conninfo


def test_a_libpq_multi_host_url_becomes_one_sqlalchemy_parses() -> None:
    url = normalize_database_url("postgresql://nexmdm:s3cret@db1:5432,db2:5433/nexmdm?target_session_attrs=read-write")

    parsed = make_url(url)

    assert parsed.drivername == "postgresql+psycopg2"
    assert parsed.query == {"host": ("db1:5432", "db2:5433"), "target_session_attrs": "read-write"}
    assert (parsed.username, parsed.password, parsed.database) == ("nexmdm", "s3cret", "nexmdm")


def test_single_host_and_sqlite_urls_are_unchanged() -> None:
    assert normalize_database_url("postgresql://u@h:5432/db?sslmode=require") == (
        "postgresql+psycopg2://u@h:5432/db?sslmode=require"
    )
    assert normalize_database_url("sqlite:////var/lib/nexmdm/a,b.db") == "sqlite:////var/lib/nexmdm/a,b.db"
    assert Settings(database_url="postgresql://h1,h2/nexmdm").database_url == (
        "postgresql+psycopg2:///nexmdm?host=h1&host=h2"
    )


def test_the_tools_get_every_host_and_the_password_outside_the_command_line() -> None:
    info, env = conninfo("postgresql://nexmdm:s3cret@db1:5432,db2:5433/nexmdm?target_session_attrs=read-write")

    assert info == ("host='db1,db2' port='5432,5433' dbname='nexmdm' user='nexmdm' target_session_attrs='read-write'")
    assert "s3cret" not in info and env["PGPASSWORD"] == "s3cret"
