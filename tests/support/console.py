"""The console in tests: a client on a loopback address (its cookies are not ``Secure`` there), signing in
the way a person does (a one-time link, its page, the form with its CSRF token), and the form's token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.access import console as people
from core.base.settings import Settings
from nexmdm_api import create_app

BASE_URL = "http://127.0.0.1"
_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


@contextmanager
def console_client(settings: Settings) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        yield client


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


def new_link(
    factory: sessionmaker[Session], role: str, scope: str | None = None, email: str = "ann@example.com"
) -> str:
    with factory.begin() as db:
        return people.create_link(db, role=role, scope=scope, email=email)


def use_link(client: TestClient[Any], token: str) -> Any:
    """Open the link's page, then press "Sign in" (the token goes in the form, as ``link.js`` puts it)."""
    page = client.get("/console/auth/link")
    assert page.status_code == 200, page.text
    return client.post(
        "/console/auth/link", data={"token": token, "_csrf_token": csrf_of(page.text)}, follow_redirects=False
    )


def sign_in(
    client: TestClient[Any],
    factory: sessionmaker[Session],
    role: str = "admin",
    scope: str | None = None,
    email: str = "ann@example.com",
) -> None:
    answer = use_link(client, new_link(factory, role, scope, email))
    assert answer.status_code == 303, answer.text


def post_form(client: TestClient[Any], page: str, action: str, **fields: str) -> Any:
    """Post a form of ``page`` with the page's CSRF token."""
    token = csrf_of(client.get(page).text)
    return client.post(action, data={**fields, "_csrf_token": token}, follow_redirects=False)
