"""An admin key's last use is recorded, at most once a minute (no write per admin request)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.models import AdminKey, ApkBuild, Campaign
from core.storage.types import utcnow
from tests.support.api import live_server
from tests.support.databases import add_device
from tests.support.fakes.apk import apk_bytes


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


def _head(method_path: str, key: str, content_type: str, length: int, extra: str = "") -> bytes:
    return (
        f"{method_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n{extra}"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def _multipart(boundary: str, apk: bytes) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="version_code"\r\n\r\n42\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="version_name"\r\n\r\n4.2\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.apk"\r\n\r\n'.encode()
        + apk
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def _campaign() -> tuple[str, bytes]:
    return "application/json", json.dumps({"action": "reboot", "selector": "all"}).encode()


def _upload() -> tuple[str, bytes]:
    return "multipart/form-data; boundary=nexmdm-b", _multipart("nexmdm-b", apk_bytes())


@pytest.mark.parametrize(
    ("method_path", "body", "written"),
    [
        ("POST /v1/campaigns", _campaign, Campaign),
        ("POST /v1/apk/builds", _upload, ApkBuild),
    ],
    ids=["campaign", "apk-upload"],
)
@pytest.mark.parametrize(("change", "status"), [("revoke", b"401"), ("lower-role", b"403"), ("expire", b"401")])
def test_a_key_revoked_while_the_body_arrives_writes_nothing(
    api_settings: Settings,
    engine: Engine,
    session_factory: sessionmaker[Session],
    method_path: str,
    body: Callable[[], tuple[str, bytes]],
    written: type[Any],
    change: str,
    status: bytes,
) -> None:
    """The key was checked when the headers arrived: a body sent after its revocation still landed (an APK
    build accepted 3 s after, a reboot campaign 120 s after). No endpoint lowers a key's role; the database
    can, and the write must see it too."""
    add_device(session_factory, "dev_a")
    with session_factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="ci", role="operator")
    content_type, data = body()
    extra = "Idempotency-Key: camp-1\r\n" if "campaigns" in method_path else ""
    with live_server(api_settings) as port, socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(_head(method_path, secret, content_type, len(data), extra) + data[: len(data) // 2])
        deadline = time.monotonic() + 10
        while _last_used(session_factory) is None:  # the guard let the key in (and recorded its use)
            assert time.monotonic() < deadline, "the guard never checked the key"
            time.sleep(0.05)
        with session_factory.begin() as db:
            if change == "revoke":
                admin_keys.revoke_admin_key(db, "ci")
            elif change == "expire":
                db.execute(update(AdminKey).values(expires_at=utcnow() - timedelta(seconds=1)))
            else:
                db.execute(update(AdminKey).values(role="viewer"))
        conn.sendall(data[len(data) // 2 :])
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := conn.recv(65536)):
            answer += chunk
    assert answer.split(b" ", 2)[1] == status, answer[:300]
    assert (b'"key_expired"' in answer) == (change == "expire"), answer[:600]
    with session_factory() as db:
        assert db.execute(select(written)).first() is None
