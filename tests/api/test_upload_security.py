"""The APK upload against a real server on loopback (issue #11 items 2 and 7), on SQLite and PostgreSQL.

A socket announces a huge body and sends only its start: the answer must come without the server waiting
for the rest, which is what "checked before the body is read" means to an attacker.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.apk import builds as apk
from core.base.settings import Settings
from core.models import ApkBuild, Device
from core.storage.engine import make_engine, make_session_factory
from tests.support.api import live_server

BOUNDARY = "nexmdm-boundary"
HUGE = 200 * 1024 * 1024


@pytest.fixture
def live(api_settings: Settings, engine: Engine) -> Iterator[tuple[int, Settings]]:
    settings = api_settings.with_overrides(auth_failure_limit=3, auth_failure_window_seconds=60)
    with live_server(settings) as port:
        yield port, settings


def _part_header(name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def _status_of_partial_upload(port: int, key: str, start: bytes, announced: int = HUGE) -> int:
    """Announce ``announced`` bytes, send ``start`` only, and return the status the server answers with."""
    head = (
        f"POST /v1/apk/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {announced}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(head + start)
        try:
            answer = conn.recv(4096)
        except TimeoutError:
            pytest.fail("the server waited for the whole body before answering")
    return int(answer.split(b" ", 2)[1])


def _admin(settings: Settings) -> str:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as db:
            return admin_keys.create_admin_key(db, name=f"ci-{time.monotonic_ns()}")[0]
    finally:
        engine.dispose()


def test_a_bad_key_is_refused_before_the_body_is_read(live: tuple[int, Settings]) -> None:
    port, settings = live
    start = _part_header("file", "agent.apk") + b"PK\x03\x04" + b"\0" * 65536
    for guess in "xyz":  # the limit (3): three failures are 401s
        assert _status_of_partial_upload(port, "nxa_" + guess * 43, start) == 401
    # a blocked address gets its 429 before its body is read too
    assert _status_of_partial_upload(port, "nxa_" + "w" * 43, start) == 429
    assert _status_of_partial_upload(port, "nxa_" + "v" * 43, start) == 429


def test_a_huge_text_field_is_refused_while_it_streams(live: tuple[int, Settings]) -> None:
    """A 150 MB ``version_name`` was held in memory whole (and uncounted by the limiter) before a 422."""
    port, settings = live
    key = _admin(settings)
    start = _part_header("version_name") + b"x" * (64 * 1024)
    assert _status_of_partial_upload(port, key, start, announced=150 * 1024 * 1024) == 413
    assert _status_of_partial_upload(port, key, _part_header("pad") + b"x" * 10) == 422  # unknown field


def _apk(size: int = 4096) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("AndroidManifest.xml", "<manifest/>")
        archive.writestr("classes.dex", b"\0" * size)
    return buffer.getvalue()


class _SlowSource(io.RawIOBase):
    """An upload that stops halfway until the test lets it go on."""

    def __init__(self, data: bytes, go_on: threading.Event, halfway: threading.Event) -> None:
        self.data, self.go_on, self.halfway, self.sent = data, go_on, halfway, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.sent >= len(self.data) // 2 and not self.go_on.is_set():
            self.halfway.set()
            assert self.go_on.wait(30)
        chunk = self.data[self.sent : self.sent + min(size if size > 0 else 1 << 20, len(self.data) // 2)]
        self.sent += len(chunk)
        return chunk


def test_no_lock_is_held_while_an_upload_is_copied(
    settings: Settings, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    """Item 7: SQLite's write lock was held while the file was hashed and copied (a heartbeat waited 1 s
    behind a 400 MB upload). Here the copy stops halfway; a write elsewhere must go through meanwhile."""
    go_on, halfway = threading.Event(), threading.Event()
    data = _apk(2 * 1024 * 1024)
    result: dict[str, Any] = {}

    def upload() -> None:
        with session_factory.begin() as db:  # how `nexmdm apk add` calls it
            result["build"] = apk.add_build(
                db, settings, source=_SlowSource(data, go_on, halfway), version_code=7, version_name="7"
            )

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        assert halfway.wait(30)
        impatient = make_engine(settings.database_url, busy_timeout_ms=2000)
        started = time.monotonic()
        with make_session_factory(impatient).begin() as db:  # a write transaction (BEGIN IMMEDIATE on SQLite)
            db.add(Device(id="beat-while-uploading"))
        impatient.dispose()
        assert time.monotonic() - started < 1.5
    finally:
        go_on.set()
        uploader.join(30)
    assert result["build"]["size_bytes"] == len(data)
    with session_factory() as db:
        assert db.execute(select(ApkBuild.version_code)).scalar_one() == 7


def _answer_to_a_trickle(port: int, head: bytes, start: bytes, limit: float = 15.0) -> tuple[int | None, float]:
    """Send ``head`` and ``start``, then one more byte every 0.2 s; the status that comes back, and when."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
        conn.sendall(head + start)
        started = time.monotonic()
        while time.monotonic() - started < limit:
            try:
                answer = conn.recv(4096)
            except TimeoutError:
                conn.sendall(b" ")  # JSON whitespace, or more of the file: never the end of the body
                continue
            return (int(answer.split(b" ", 2)[1]) if answer else None), time.monotonic() - started
    return None, limit


@pytest.mark.parametrize(
    ("path", "token"),
    [("/v1/heartbeat", "nxd_" + "d" * 43), ("/v1/enroll", "nxe_" + "e" * 43)],
    ids=["heartbeat", "enroll"],
)
def test_a_trickled_body_is_cut_off_at_its_deadline(
    api_settings: Settings, engine: Engine, path: str, token: str
) -> None:
    """Slowloris: a made-up device token (its shape is all that is checked before the body) held a
    connection for as long as it sent a byte now and then."""
    settings = api_settings.with_overrides(request_body_timeout_seconds=1.0)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    ).encode()
    with live_server(settings) as port:
        status, took = _answer_to_a_trickle(port, head, b'{"status": "ok"')
    assert status == 408, (status, took)
    assert took < 4.0, took


def test_a_trickled_upload_is_cut_off_at_its_own_deadline(api_settings: Settings, engine: Engine) -> None:
    settings = api_settings.with_overrides(apk_upload_timeout_seconds=1.0, request_body_timeout_seconds=60.0)
    head = (
        f"POST /v1/apk/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {_admin(settings)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {HUGE}\r\n\r\n"
    ).encode()
    with live_server(settings) as port:
        status, took = _answer_to_a_trickle(port, head, _part_header("file", "agent.apk") + b"PK\x03\x04")
    assert status == 408 and took < 4.0, (status, took)
    assert settings.apk_dir is not None
    leftovers = [p.name for p in settings.apk_dir.rglob("*") if p.is_file()] if settings.apk_dir.exists() else []
    assert leftovers == []  # the half-staged file was discarded
