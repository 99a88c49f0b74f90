"""One migration tree for both databases: single head, round trips with data, models agree."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import DataError

from core import db_utils
from core.models import Base, Device
from core.storage.engine import make_engine, make_session_factory
from core.storage.migrations import alembic_config, compare_options, current_revision, head_revision
from tests.support.databases import BACKENDS, DatabaseFactory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    return databases.create(request.param)


def test_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1


def test_round_trip_with_rows_present(fresh_url: str) -> None:
    cfg = alembic_config(fresh_url)
    command.upgrade(cfg, "head")
    engine = make_engine(fresh_url)
    assert current_revision(engine) == head_revision()
    factory = make_session_factory(engine)
    with factory.begin() as db:
        db.add(Device(id="dev_rt"))
        db.flush()
        db_utils.record_heartbeat_with_bucketing(db, device_id="dev_rt", heartbeat_data={"battery_pct": 5})
        db_utils.record_fcm_dispatch(
            db, request_id="rt", device_id="dev_rt", action="ping", payload_hash="a" * 64, payload={"k": [1]}
        )
    engine.dispose()

    command.downgrade(cfg, "0003")  # a 64-character hash fits the narrower column again
    engine = make_engine(fresh_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT payload_hash FROM fcm_dispatches")).scalar_one() == "a" * 64
    engine.dispose()
    command.upgrade(cfg, "head")
    engine = make_engine(fresh_url)
    factory = make_session_factory(engine)
    with factory.begin() as db:
        db_utils.record_fcm_dispatch(db, request_id="rt2", device_id="dev_rt", action="ping", payload_hash="b" * 128)
    if engine.dialect.name == "postgresql":  # SQLite does not enforce lengths
        with pytest.raises(DataError, match="value too long"):  # refused, nothing changed: never truncated
            command.downgrade(cfg, "0003")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM fcm_dispatches WHERE request_id = 'rt2'"))
    engine.dispose()

    command.downgrade(cfg, "base")
    engine = make_engine(fresh_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()

    command.upgrade(cfg, "head")
    engine = make_engine(fresh_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM device_heartbeats")).scalar_one() == 0
    engine.dispose()


def test_models_and_migrations_agree(fresh_url: str) -> None:
    command.upgrade(alembic_config(fresh_url), "head")
    engine = make_engine(fresh_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=compare_options(conn))
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_alembic_cli_works_from_repo_root(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"NEXMDM_DATABASE_URL": url, "PATH": str(Path(sys.executable).parent)}
    alembic = Path(sys.executable).parent / "alembic"
    done = subprocess.run([str(alembic), "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrations_found_from_another_folder(tmp_path: Path) -> None:
    code = "from core.storage.migrations import script_location; print(script_location())"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert (Path(done.stdout.strip()) / "env.py").is_file()


def test_timestamps_come_back_aware_in_utc(fresh_url: str) -> None:
    command.upgrade(alembic_config(fresh_url), "head")
    engine = make_engine(fresh_url)
    with make_session_factory(engine).begin() as db:
        db.add(Device(id="dev_tz", enrolled_at=datetime(2026, 3, 1, 12, tzinfo=UTC)))
    with make_session_factory(engine)() as db:
        enrolled = db.get(Device, "dev_tz").enrolled_at
    engine.dispose()
    assert enrolled == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert enrolled.utcoffset().total_seconds() == 0


def test_the_clis_revision_readers_agree_with_alembic(engine) -> None:
    """``core.storage.schema_version`` (read without Alembic, for a fast CLI start) gives Alembic's answers."""
    from core.storage import migrations, schema_version

    assert schema_version.head_revision() == migrations.head_revision()
    assert schema_version.current_revision(engine) == migrations.current_revision(engine)
