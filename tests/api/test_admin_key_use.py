"""An admin key's last use is recorded, at most once a minute (no write per admin request)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.models import AdminKey
from core.storage.types import utcnow


@pytest.fixture
def key_writes() -> Iterator[list[str]]:
    """Every UPDATE of admin_keys sent by any engine (the app builds its own)."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE ADMIN_KEYS"):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", listen)
    yield seen
    event.remove(Engine, "before_cursor_execute", listen)


def _last_used(factory: sessionmaker[Session]) -> Any:
    with factory() as db:
        (key,) = admin_keys.list_admin_keys(db)
        return key["last_used_at"]


def test_last_used_is_written_once_a_minute(
    client: TestClient[Any], admin: dict[str, str], session_factory: sessionmaker[Session], key_writes: list[str]
) -> None:
    assert _last_used(session_factory) is None
    before = utcnow()
    for _ in range(5):
        assert client.get("/v1/devices", headers=admin).status_code == 200
    first = _last_used(session_factory)
    assert first is not None and first >= before - timedelta(seconds=1)
    assert len(key_writes) == 1  # five requests, one write

    with session_factory.begin() as db:  # a minute later, the next request records it again
        db.execute(update(AdminKey).values(last_used_at=utcnow() - timedelta(minutes=2)))
    key_writes.clear()
    assert client.get("/v1/devices", headers=admin).status_code == 200
    assert client.get("/v1/devices", headers=admin).status_code == 200
    assert len(key_writes) == 1
    assert _last_used(session_factory) >= before


def test_the_cli_shows_it(
    client: TestClient[Any], admin: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    assert client.get("/v1/devices", headers=admin).status_code == 200
    with session_factory() as db:
        (key,) = admin_keys.list_admin_keys(db)
    assert key["last_used_at"] is not None  # `nexmdm keys list` no longer says "never"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_key_row_locked_by_another_request_is_skipped_not_waited_for(
    client: TestClient[Any], admin: dict[str, str], engine: Engine
) -> None:
    """At the minute's turn concurrent requests of one key do not queue on its row lock."""
    other = engine.connect()
    other.begin()
    other.execute(update(AdminKey).values(name=AdminKey.name))  # holds the row lock, like a request would
    pool = ThreadPoolExecutor(1)
    try:
        answer = pool.submit(client.get, "/v1/devices", headers=admin)
        status = answer.result(timeout=20).status_code  # would wait for `other` without SKIP LOCKED
    finally:
        other.rollback()  # releases a request that waited, so that a failing test ends
        other.close()
        pool.shutdown()
    assert status == 200
