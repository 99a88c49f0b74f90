"""Signing in to the console with OpenID Connect, against a real provider on loopback (``oidc-provider-mock``):
the authorization code with PKCE, the ID token checked, its claims mapped to a role and a scope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from oidc_provider_mock import User, run_server_in_thread
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.models import AuditEvent, ConsoleSession
from tests.support.console import console_client, csrf_of
from tests.support.fleet import seed_fleet

USERS = [
    User(sub="ann", claims={"email": "ann@example.com", "groups": ["store-42"]}),
    User(sub="eve", claims={"email": "eve@example.com", "groups": ["visitors"]}),
]


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with run_server_in_thread(user_claims=USERS, require_nonce=True) as server:
        yield f"http://localhost:{server.server_port}"


def _with_provider(settings: Settings, issuer: str, **more: Any) -> Settings:
    """The console with ``issuer`` as its identity provider (``NEXMDM_PUBLIC_URL`` is required with one: the
    callback URL is built from it); ann of store 42 gets ``operator@store=42``."""
    given: dict[str, Any] = {
        "oidc_issuer": issuer,
        "public_url": "http://127.0.0.1",
        "oidc_client_id": "nexmdm-console",
        "oidc_client_secret": "not-checked-by-the-mock",
        "oidc_roles": "groups:store-42=operator@store=42",
    }
    return settings.with_overrides(**(given | more))


def _sign_in(client: Any, sub: str, next_page: str = "/console/") -> tuple[Any, str]:
    """What a browser does: the console sends it to the provider, the person picks ``sub``, back to the console."""
    start = client.get("/console/auth/login", params={"next": next_page}, follow_redirects=False)
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    back = httpx.post(authorize, data={"sub": sub}, follow_redirects=False)
    assert back.status_code == 302, back.text
    callback = urlsplit(back.headers["location"])
    assert callback.path == "/console/auth/callback"
    path = f"{callback.path}?{callback.query}"
    return client.get(path, follow_redirects=False), path


def test_a_person_signs_in_with_their_identity_provider(
    issuer: str, settings: Settings, engine: Any, session_factory: sessionmaker[Session]
) -> None:
    seed_fleet(session_factory)
    oidc = _with_provider(settings, issuer, oidc_roles="groups:mdm-admins=admin,groups:store-42=operator@store=42")
    with console_client(oidc) as client:
        assert "Sign in with your identity provider" in client.get("/console/signin").text
        done, callback = _sign_in(client, "ann", next_page="/console/devices/a1")
        assert done.status_code == 303 and done.headers["location"] == "/console/devices/a1"
        devices = client.get("/console/devices").text
        assert 'href="/console/devices/a1"' in devices and 'href="/console/devices/a3"' not in devices
        assert "operator @ <code>store=42</code>" in devices

        replayed = client.get(callback, follow_redirects=False)  # the state was used once
        assert replayed.status_code == 401 and "used or expired" in replayed.text

    with console_client(oidc) as client:
        refused, _ = _sign_in(client, "eve", next_page="https://evil.example.com/")
        assert refused.status_code == 401 and "has no role" in refused.text
        assert client.get("/console/", follow_redirects=False).status_code == 303

    with session_factory() as db:
        events = db.execute(select(AuditEvent).where(AuditEvent.action == "console.sign_in")).scalars().all()
    assert [(e.actor, e.details) for e in events if e.outcome == "success"] == [
        ("user:ann@example.com", {"role": "operator", "scope": "store=42", "via": "oidc"})
    ]
    assert {e.actor for e in events if e.outcome == "denied"} == {"user:unknown"}  # the replay and eve


def test_a_callback_is_taken_only_from_the_browser_that_began_the_sign_in(
    issuer: str, settings: Settings, engine: Any
) -> None:
    """The provider's answer replayed from another browser (a leaked callback URL, or one forced on a victim to
    sign them in as the attacker) is refused; the callback URL is NEXMDM_PUBLIC_URL's, whatever Host says; an
    identity provider without a public URL is a settings error."""
    oidc = _with_provider(settings, issuer)
    with console_client(oidc) as began, console_client(oidc) as other:
        start = began.get("/console/auth/login", headers={"Host": "evil.example"}, follow_redirects=False)
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["redirect_uri"] == ["http://127.0.0.1/console/auth/callback"]
        back = httpx.post(start.headers["location"], data={"sub": "ann"}, follow_redirects=False)
        callback = urlsplit(back.headers["location"])
        stolen = other.get(f"{callback.path}?{callback.query}", follow_redirects=False)
        assert stolen.status_code == 401 and "another browser" in stolen.text
        assert "nexmdm_console" not in other.cookies
        # the browser that began it, without a CSRF cookie at the callback: the session is bound to the token
        # Litestar's middleware issues with that answer, and a form with it is accepted
        again = began.get("/console/auth/login", follow_redirects=False)
        back = httpx.post(again.headers["location"], data={"sub": "ann"}, follow_redirects=False)
        began.cookies.delete("nexmdm_csrf")
        assert "nexmdm_csrf" not in began.cookies
        callback = urlsplit(back.headers["location"])
        assert began.get(f"{callback.path}?{callback.query}", follow_redirects=False).status_code == 303
        token = csrf_of(began.get("/console/").text)
        out = began.post("/console/signout", data={"_csrf_token": token}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/console/signin"
    with pytest.raises(InvalidArgument) as refused:
        settings.with_overrides(oidc_issuer=issuer)
    assert refused.value.field == "public_url"


def test_an_address_cannot_begin_sign_ins_without_end(
    issuer: str, settings: Settings, engine: Any, session_factory: sessionmaker[Session]
) -> None:
    """Beginning a sign-in writes a row before anyone is known: past the failed-authentication limit of its
    address, 429 and nothing written."""
    oidc = _with_provider(settings, issuer, auth_failure_limit=2)
    with console_client(oidc) as client:
        answers = [client.get("/console/auth/login", follow_redirects=False).status_code for _ in range(4)]
    assert answers == [302, 302, 429, 429]
    with session_factory() as db:
        pending = db.execute(select(func.count()).where(ConsoleSession.kind == "oidc")).scalar_one()
    assert pending == 2
