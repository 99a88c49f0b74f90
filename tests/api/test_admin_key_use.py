"""An admin key's last use is recorded, at most once a minute (no write per admin request)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session, sessionmaker

from core import credentials
from core.models import AdminKey
from core.types import utcnow


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
        (key,) = credentials.list_admin_keys(db)
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
        (key,) = credentials.list_admin_keys(db)
    assert key["last_used_at"] is not None  # `nexmdm keys list` no longer says "never"
