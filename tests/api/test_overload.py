"""Overload answers 503 with Retry-After within a bounded wait, never a 500 or a hang: the heartbeat
writer's wait and its full queue (PostgreSQL), SQLite's write slot (in this process and across
processes), and an exhausted connection pool."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, create_engine, text

from core.base.settings import Settings
from nexmdm_api import create_app, heartbeat_writer
from tests.support.api import bearer

BEAT = {"status": "ok", "battery_pct": 50}


def _unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
    assert int(response.headers["retry-after"]) >= 1


@pytest.fixture
def device_client(
    api_settings: Settings, engine: Engine, make_token: Callable[..., str]
) -> Iterator[tuple[TestClient[Any], dict[str, str]]]:
    settings = api_settings.with_overrides(sqlite_busy_timeout_ms=300)
    with TestClient(create_app(settings)) as client:
        enrolled = client.post("/v1/enroll", json={"device_id": "dev_1"}, headers=bearer(make_token()))
        assert enrolled.status_code == 201
        yield client, bearer(enrolled.json()["device_token"])


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_heartbeat_writers_wait_and_full_queue_are_503(
    device_client: tuple[TestClient[Any], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, device = device_client
    writer = client.app.state.heartbeat_writer
    assert client.post("/v1/heartbeat", json=BEAT, headers=device).status_code == 201
    writer.stop()  # nothing drains the queue any more: a stuck database, as far as requests can tell
    monkeypatch.setattr(heartbeat_writer, "WAIT_SECONDS", 0.3)
    _unavailable(client.post("/v1/heartbeat", json=BEAT, headers=device))  # waited 0.3 s, then 503
    writer._queue.maxsize = writer._queue.qsize()  # full: refused at once, without waiting
    monkeypatch.setattr(heartbeat_writer, "WAIT_SECONDS", 60)  # so a 503 now can only be the full queue
    _unavailable(client.post("/v1/heartbeat", json=BEAT, headers=device))
    writer._queue.maxsize = 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlites_write_slot_taken_in_this_process_is_503(device_client: tuple[TestClient[Any], dict[str, str]]) -> None:
    client, device = device_client
    with client.app.state.db.engine.connect() as conn:
        conn.begin()  # holds the process's write slot (BEGIN IMMEDIATE)
        conn.execute(text("SELECT 1"))
        _unavailable(client.post("/v1/heartbeat", json=BEAT, headers=device))
        conn.rollback()
    assert client.post("/v1/heartbeat", json=BEAT, headers=device).status_code == 201  # the slot came back


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_locked_by_another_process_is_503(
    device_client: tuple[TestClient[Any], dict[str, str]], settings: Settings
) -> None:
    client, device = device_client
    other = create_engine(settings.database_url, isolation_level=None)  # a connection of "another process"
    try:
        with other.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            _unavailable(client.post("/v1/heartbeat", json=BEAT, headers=device))  # after the 0.3 s busy wait
            conn.exec_driver_sql("ROLLBACK")
    finally:
        other.dispose()
    assert client.post("/v1/heartbeat", json=BEAT, headers=device).status_code == 201


def _hold_every_connection(engine: Engine) -> list[Any]:
    """Check out the whole pool; the server's maintenance thread may hold a slot for a moment: wait for it."""
    import sqlalchemy.exc

    held: list[Any] = []
    deadline = time.monotonic() + 15
    while len(held) < engine.pool.size() + engine.pool._max_overflow:  # type: ignore[attr-defined]
        try:
            held.append(engine.connect())
        except sqlalchemy.exc.TimeoutError:
            if time.monotonic() > deadline:
                raise
    return held


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's pool is not the one that runs out (a write slot, above)
def test_an_exhausted_connection_pool_is_503(
    api_settings: Settings, engine: Engine, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nexmdm_api import db as api_db

    monkeypatch.setattr(api_db, "POOL_TIMEOUT_SECONDS", 0.3)
    settings = api_settings.with_overrides(db_pool_size=1)
    with TestClient(create_app(settings)) as client:
        pool_engine = client.app.state.db.engine
        held = _hold_every_connection(pool_engine)
        try:
            _unavailable(client.get("/v1/devices", headers=admin))
        finally:
            for conn in held:
                conn.close()
        assert client.get("/v1/devices", headers=admin).status_code == 200
