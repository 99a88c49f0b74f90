"""API fixtures: a ``TestClient`` with the lifespan running, on SQLite and PostgreSQL, plus credentials.

Registered for every test folder by the root ``conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.enrollment import tokens as credentials
from nexmdm_api import create_app
from nexmdm_cli.commands.demo import free_port


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """The test settings; tests that need other limits override them with ``with_overrides``."""
    return settings


@pytest.fixture
def client(api_settings: Settings, engine: Engine) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture
def make_token(session_factory: sessionmaker[Session]) -> Callable[..., str]:
    def make(uses: int = 5, expires_in: timedelta = timedelta(hours=1)) -> str:
        with session_factory.begin() as db:
            secret, _ = credentials.create_enrollment_token(db, uses=uses, expires_in=expires_in)
        return secret

    return make


@pytest.fixture
def admin_key(session_factory: sessionmaker[Session]) -> str:
    with session_factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="ops")
    return secret


@pytest.fixture
def admin(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


@pytest.fixture
def enroll(client: TestClient[Any], make_token: Callable[..., str]) -> Callable[..., str]:
    """Enroll a device through the API; returns its device token."""
    token = make_token(uses=100)

    def do(device_id: str = "dev_001", **fields: Any) -> str:
        response = client.post(
            "/v1/enroll", json={"device_id": device_id, **fields}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 201, response.text
        return response.json()["device_token"]

    return do


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth() -> Callable[[str], dict[str, str]]:
    return bearer


@contextmanager
def live_server(settings: Settings) -> Iterator[int]:
    """``create_app(settings)`` under a real uvicorn on 127.0.0.1, for what a TestClient cannot do (it hands
    the app the whole body at once): a body that arrives slowly. Yields the port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)
