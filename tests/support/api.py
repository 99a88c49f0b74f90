"""API fixtures: a ``TestClient`` with the lifespan running, on SQLite and PostgreSQL, plus credentials.

Registered for every test folder by the root ``conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.enrollment import tokens as credentials
from nexmdm_api import create_app


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
