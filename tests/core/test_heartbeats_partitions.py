"""Daily heartbeat partitions on PostgreSQL: created ahead, created on demand, dropped by retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import db_utils
from core.base.settings import Settings
from core.heartbeats import partitions
from core.models import DeviceHeartbeat
from core.storage.engine import make_engine, make_session_factory
from tests.support.databases import add_device, run_together


@pytest.fixture
def backend() -> str:
    return "postgresql"


def _days(factory: sessionmaker[Session]) -> set:
    with factory() as db:
        return set(partitions.existing_partitions(db.connection()))


def test_migration_creates_partitions_ahead(session_factory: sessionmaker[Session]) -> None:
    today = datetime.now(UTC).date()
    days = _days(session_factory)
    assert {today + timedelta(days=i) for i in range(8)} <= days
    with session_factory() as db:
        assert partitions.is_partitioned(db.connection())


def test_backfill_creates_its_partition(session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_p")
    old = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    with session_factory.begin() as db:
        result = db_utils.record_heartbeat_with_bucketing(db, device_id="dev_p", heartbeat_data={}, received_at=old)
    assert result["created"]
    assert old.date() in _days(session_factory)


def _first_beats_of(day: datetime, factories: list[sessionmaker[Session]]) -> None:
    """One first heartbeat of ``day`` per factory, all released at the same moment (as processes would)."""

    def beat(i: int) -> None:
        with factories[i].begin() as db:
            db_utils.record_heartbeat_with_bucketing(db, device_id=f"dev_{i}", heartbeat_data={}, received_at=day)

    run_together(len(factories), beat)  # raises the first error, e.g. DuplicateTable


def test_concurrent_first_beats_of_a_new_day(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    for i in range(8):
        add_device(session_factory, f"dev_{i}")
    engine = make_engine(settings.database_url, pool_size=8)
    _first_beats_of(datetime(2024, 2, 29, 12, tzinfo=UTC), [make_session_factory(engine, settings)] * 8)
    engine.dispose()
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(DeviceHeartbeat)).scalar_one() == 8


def test_processes_creating_one_new_day_in_autocommit(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """The API's hot path runs in autocommit sessions, one pool per process: they must not collide."""
    for i in range(12):
        add_device(session_factory, f"dev_{i}")
    engines = [make_engine(settings.database_url, isolation_level="AUTOCOMMIT", pool_size=1) for _ in range(12)]
    moment = datetime.now(UTC) + timedelta(days=30)
    try:
        _first_beats_of(moment, [make_session_factory(e, settings) for e in engines])
    finally:
        for engine in engines:
            engine.dispose()
    assert moment.date() in _days(session_factory)


def test_retention_drops_whole_partitions_and_trims_the_boundary(session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_r")
    now = datetime.now(UTC)
    cutoff_day = (now - timedelta(days=10)).date()
    moments = [now - timedelta(days=d, hours=h) for d in (14, 12, 11) for h in (0, 1)]
    boundary_start = datetime(cutoff_day.year, cutoff_day.month, cutoff_day.day, tzinfo=UTC)
    # a row of the boundary day older than the cutoff: a minute into the day, or halfway to the cutoff when the
    # test runs in the first minutes after midnight UTC
    early = boundary_start + min(timedelta(minutes=1), (now - timedelta(days=10) - boundary_start) / 2)
    moments += [early, now - timedelta(days=10) + timedelta(minutes=5), now]
    with session_factory.begin() as db:
        for m in moments:
            db_utils.record_heartbeat_with_bucketing(db, device_id="dev_r", heartbeat_data={}, received_at=m)
    expired_days = {m.date() for m in moments[:6]}
    assert expired_days <= _days(session_factory)

    with session_factory() as db:
        dry = db_utils.cleanup_old_heartbeats(db, retention_days=10, dry_run=True)
    assert dry["would_delete"] == 7
    assert expired_days <= _days(session_factory)  # a dry run drops nothing

    with session_factory() as db:
        real = db_utils.cleanup_old_heartbeats(db, retention_days=10)
    assert real["deleted"] == 7
    days = _days(session_factory)
    assert not expired_days & days
    assert cutoff_day in days  # the boundary day keeps its partition and its newer rows
    with session_factory() as db:
        left = sorted(db.execute(select(DeviceHeartbeat.bucket_start)).scalars())
    assert len(left) == 2 and all(ts >= real["cutoff"] for ts in left)
    # ingestion goes on, into the partitions cleanup keeps ahead
    with session_factory.begin() as db:
        assert db_utils.record_heartbeat_with_bucketing(
            db, device_id="dev_r", heartbeat_data={}, received_at=now + timedelta(days=6)
        )["created"]


def test_dropping_expired_days_does_not_wait_for_devices(settings: Settings) -> None:
    """Heartbeats update ``devices``; retention must not need a lock on it (no foreign key to devices)."""
    quick = Settings(
        database_url=settings.database_url, data_dir=settings.data_dir, cleanup_lock_timeout_ms=300, cleanup_retries=1
    )
    engine = make_engine(quick.database_url)
    factory = make_session_factory(engine, quick)
    add_device(factory, "dev_busy")
    old = datetime.now(UTC) - timedelta(days=20)
    with factory.begin() as db:
        for hours in (0, 1, 2):
            db_utils.record_heartbeat_with_bucketing(
                db, device_id="dev_busy", heartbeat_data={}, received_at=old + timedelta(hours=hours)
            )
    with engine.connect() as holder:  # a heartbeat's summary update, in flight
        holder.exec_driver_sql("UPDATE devices SET last_status = 'ok' WHERE id = 'dev_busy'")
        with factory() as db:
            result = db_utils.cleanup_old_heartbeats(db, retention_days=10)  # LockTimeout if it needed devices
        holder.rollback()
    assert result["deleted"] == 3
    assert old.date() not in _days(factory)
    engine.dispose()
