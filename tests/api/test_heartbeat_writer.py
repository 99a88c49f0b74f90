"""Group commit of heartbeats on PostgreSQL: the beats that wait together go in one statement, each gets
its own outcome, and one bad beat cannot fail the others."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from core.base import security
from core.base.errors import Forbidden, InvalidCredentials
from core.base.settings import Settings
from core.heartbeats.store import Beat, prepare_beat, store_beats
from core.models import Device, DeviceHeartbeat
from core.storage.engine import make_engine
from nexmdm_api.heartbeat_writer import HeartbeatWriter

T0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def backend() -> str:
    return "postgresql"  # the writer exists on PostgreSQL only (SQLite stores in the request's transaction)


@pytest.fixture
def tokens(session_factory: sessionmaker[Session]) -> dict[str, str]:
    secrets = {f"dev_{i:02d}": security.new_secret(security.DEVICE_PREFIX) for i in range(20)}
    with session_factory.begin() as db:
        db.add_all(Device(id=d, device_token_hash=security.hash_secret(s)) for d, s in secrets.items())
    return secrets


@pytest.fixture
def autocommit_engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def count_statements(engine: Engine) -> list[int]:
    """Number of rows passed to each batch statement, recorded as they run."""
    sizes: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "unnest(" in statement:
            sizes.append(len(parameters["idx"]))

    return sizes


async def _store_all(writer: HeartbeatWriter, beats: list[Beat]) -> list[Any]:
    """Queue every beat before the writer starts, so that they wait together; gather the outcomes."""
    tasks = [asyncio.create_task(writer.store(b)) for b in beats]
    await asyncio.sleep(0)  # every task has queued its beat
    writer.start()
    try:
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        writer.stop()


def _beat(token: str, settings: Settings, at: datetime = T0, **data: Any) -> Beat:
    return prepare_beat(token, {"status": "ok", **data}, settings, received_at=at)


def _rows(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as db:
        return dict(
            db.execute(select(DeviceHeartbeat.device_id, func.count()).group_by(DeviceHeartbeat.device_id)).all()
        )


def test_beats_waiting_together_are_stored_by_one_statement(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    sizes = count_statements(autocommit_engine)
    beats = [_beat(t, settings, battery_pct=i) for i, t in enumerate(tokens.values())]
    outcomes = asyncio.run(_store_all(HeartbeatWriter(autocommit_engine, settings), beats))
    assert sizes == [len(tokens)]
    assert [o["device_id"] for o in outcomes] == list(tokens)
    assert all(o["created"] and o["bucket_start"] == T0 for o in outcomes)
    assert _rows(session_factory) == dict.fromkeys(tokens, 1)
    with session_factory() as db:
        seen = dict(db.execute(select(Device.id, Device.last_battery_pct)).all())
    assert seen == {d: i for i, d in enumerate(tokens)}  # each device got its own beat's summary


def test_a_second_beat_of_the_same_device_waits_for_the_next_statement(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    sizes = count_statements(autocommit_engine)
    first, second = list(tokens.values())[:2]
    beats = [
        _beat(first, settings, battery_pct=10),
        _beat(first, settings, T0 + timedelta(seconds=3), battery_pct=20),  # same bucket: a dedup hit
        _beat(second, settings),
        _beat(first, settings, T0 + timedelta(seconds=10), battery_pct=30),  # the next bucket
    ]
    outcomes = asyncio.run(_store_all(HeartbeatWriter(autocommit_engine, settings, max_batch=10), beats))
    assert sizes == [2, 1, 1]  # arrival order kept per device
    assert [o["created"] for o in outcomes] == [True, False, True, True]
    assert _rows(session_factory) == {"dev_00": 2, "dev_01": 1}
    with session_factory() as db:
        assert db.get(Device, "dev_00").last_battery_pct == 30


def test_each_beat_gets_its_own_refusal_and_writes_nothing(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    good, other = list(tokens.values())[:2]
    beats = [
        _beat(good, settings),
        _beat("nxd_unknown", settings),
        _beat(other, settings, device_id="dev_00"),  # claims to be another device
    ]
    outcomes = asyncio.run(_store_all(HeartbeatWriter(autocommit_engine, settings), beats))
    assert outcomes[0]["device_id"] == "dev_00"
    assert isinstance(outcomes[1], InvalidCredentials)
    assert isinstance(outcomes[2], Forbidden)
    assert _rows(session_factory) == {"dev_00": 1}


def test_a_beat_the_database_refuses_does_not_fail_the_batch(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    values = list(tokens.values())[:4]
    beats = [_beat(t, settings) for t in values]
    beats[2] = dataclasses.replace(beats[2], status="x" * 500)  # past validation: longer than the column
    outcomes = asyncio.run(_store_all(HeartbeatWriter(autocommit_engine, settings), beats))
    assert isinstance(outcomes[2], DataError)
    assert [o["created"] for i, o in enumerate(outcomes) if i != 2] == [True, True, True]
    assert _rows(session_factory) == {"dev_00": 1, "dev_01": 1, "dev_03": 1}


def test_store_beats_refuses_two_beats_of_one_token(autocommit_engine: Engine, settings: Settings) -> None:
    beat = _beat("nxd_x", settings)
    with autocommit_engine.connect() as conn, pytest.raises(ValueError, match="one beat per token"):
        store_beats(conn, [beat, beat], settings)


def test_the_writer_recovers_after_its_connection_breaks(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    first, second = list(tokens.values())[:2]

    async def scenario() -> list[Any]:
        writer = HeartbeatWriter(autocommit_engine, settings).start()
        try:
            one = await writer.store(_beat(first, settings))
            # the server ends the writer's session (as a failover would); the writer holds its connection
            pid = writer._conn.connection.dbapi_connection.get_backend_pid()  # type: ignore[union-attr]
            with session_factory() as db:
                assert db.execute(select(func.pg_terminate_backend(pid))).scalar_one()
            outcomes = [one]
            for _ in range(3):  # the first try may meet the dead connection; the writer then takes a new one
                try:
                    outcomes.append(await writer.store(_beat(second, settings)))
                    break
                except Exception as exc:  # noqa: BLE001 - recorded and checked below
                    outcomes.append(exc)
            return outcomes
        finally:
            writer.stop()

    outcomes = asyncio.run(scenario())
    assert outcomes[0]["created"] is True
    assert isinstance(outcomes[-1], dict) and outcomes[-1]["device_id"] == "dev_01"
    assert len(outcomes) == 3 and isinstance(outcomes[1], Exception)  # one failed batch, then a fresh connection
    assert _rows(session_factory) == {"dev_00": 1, "dev_01": 1}


def test_an_older_beat_stored_late_does_not_turn_the_summary_back(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    token = next(iter(tokens.values()))
    with autocommit_engine.connect() as conn:
        store_beats(conn, [_beat(token, settings, T0 + timedelta(seconds=20), battery_pct=90)], settings)
        (late,) = store_beats(conn, [_beat(token, settings, T0, battery_pct=10)], settings)
    assert late["created"] is True  # its own bucket is stored
    with session_factory() as db:
        device = db.get(Device, "dev_00")
    assert (device.last_seen_at, device.last_battery_pct) == (T0 + timedelta(seconds=20), 90)


def test_a_locked_device_fails_its_batch_within_the_lock_timeout_and_the_writer_goes_on(
    settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    from nexmdm_api.db import open_database
    from nexmdm_api.heartbeat_writer import LOCK_TIMEOUT_MS

    database = open_database(settings)
    engine = database.autocommit_sessions.kw["bind"]
    first, second = list(tokens.values())[:2]

    async def scenario() -> tuple[Any, float, Any]:
        writer = HeartbeatWriter(engine, settings).start()
        try:
            with session_factory() as holder:  # an enrollment or a revocation holding dev_00's row
                holder.execute(select(Device).where(Device.id == "dev_00").with_for_update())
                started = asyncio.get_running_loop().time()
                try:
                    blocked: Any = await writer.store(_beat(first, settings))
                except Exception as exc:  # noqa: BLE001 - checked below
                    blocked = exc
                waited = asyncio.get_running_loop().time() - started
                holder.rollback()
            return blocked, waited, await writer.store(_beat(second, settings))
        finally:
            writer.stop()

    blocked, waited, after = asyncio.run(scenario())
    database.engine.dispose()
    engine.dispose()
    assert "lock timeout" in str(blocked)
    assert waited < LOCK_TIMEOUT_MS / 1000 + 1.5  # bounded by the writer's lock timeout, not by the holder
    assert after["device_id"] == "dev_01"


def test_an_unexpected_error_fails_its_batch_but_not_the_writer(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = list(tokens.values())[:2]
    writer = HeartbeatWriter(autocommit_engine, settings)
    real = writer._store
    calls = []

    def flaky(batch: list[Any]) -> None:  # fails outside the statement, where _store catches nothing
        calls.append(len(batch))
        if len(calls) == 1:
            raise MemoryError("simulated")
        real(batch)

    monkeypatch.setattr(writer, "_store", flaky)

    async def scenario() -> list[Any]:
        writer.start()
        try:
            outcomes: list[Any] = []
            for token in (first, second):
                try:
                    outcomes.append(await writer.store(_beat(token, settings)))
                except BaseException as exc:  # noqa: BLE001 - checked below
                    outcomes.append(exc)
            return outcomes
        finally:
            writer.stop()

    failed, stored = asyncio.run(scenario())
    assert isinstance(failed, MemoryError)
    assert stored["device_id"] == "dev_01"


def test_a_partition_dropped_behind_the_cache_is_created_again(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    from core.heartbeats import partitions

    later = T0 + timedelta(days=3)
    beat = _beat(next(iter(tokens.values())), settings, later)
    with autocommit_engine.connect() as conn:
        partitions.ensure_for(conn, later)  # the cache now knows the day
        conn.exec_driver_sql(f"DROP TABLE {partitions.partition_name(later.date())}")  # another process drops it
        (outcome,) = store_beats(conn, [beat], settings)
    assert outcome["created"] is True
    assert _rows(session_factory) == {"dev_00": 1}


def test_an_idle_writer_gives_its_connection_back_to_the_pool(
    autocommit_engine: Engine, settings: Settings, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nexmdm_api import heartbeat_writer

    # long enough that the check right after the store sees the connection still held on a loaded machine
    monkeypatch.setattr(heartbeat_writer, "IDLE_RELEASE_SECONDS", 1.0)
    token = next(iter(tokens.values()))

    async def scenario() -> tuple[bool, int]:
        writer = HeartbeatWriter(autocommit_engine, settings).start()
        try:
            await writer.store(_beat(token, settings))
            held = writer._conn is not None  # kept while beats keep coming
            # then, once idle, it goes back: the outcome is asserted, not the time it took (bounded at 30 s)
            for _ in range(3000):
                if autocommit_engine.pool.checkedout() == 0:
                    break
                await asyncio.sleep(0.01)
            return held, autocommit_engine.pool.checkedout()
        finally:
            writer.stop()

    held, checked_out = asyncio.run(scenario())
    assert held and checked_out == 0  # idle: back in the pool, which pings it before the next use
