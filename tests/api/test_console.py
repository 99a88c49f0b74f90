"""The browser console over HTTP (Litestar's test client, both databases): signing in with a one-time link,
sessions and their ends, CSRF, security headers, roles, scopes and escaping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.access import console as people
from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.devices.labels import device_labels
from core.models import AuditEvent, ConsoleSession, Device
from core.profiles import effective
from core.storage.types import utcnow
from nexmdm_api import create_app
from nexmdm_api.console.session import CSRF_COOKIE
from tests.support.console import (
    BASE_URL,
    console_client,
    csrf_of,
    new_link,
    post_form,
    sign_in,
    use_link,
)
from tests.support.fleet import seed_fleet
from tests.support.profiles import profile
from tests.support.rollouts import roll


@pytest.fixture
def console(settings: Settings, engine: Any, session_factory: sessionmaker[Session]) -> Any:
    seed_fleet(session_factory)
    with console_client(settings) as client:
        yield client


def _audit(factory: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with factory() as db:
        return list(db.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def _campaign(factory: sessionmaker[Session], settings: Settings, key: str = "console-1") -> str:
    with factory.begin() as db:
        _, campaign = fleet.create_campaign(
            db, settings, idempotency_key=key, action="ping", selector="store=42", waves={"size": 1}
        )
    return str(campaign["id"])


def test_a_link_signs_in_once_and_every_page_answers(
    console: TestClient[Any], session_factory: sessionmaker[Session]
) -> None:
    first = console.get("/console/devices?selector=store%3D42", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/console/signin?next=%2Fconsole%2Fdevices%3Fselector%3Dstore%253D42"

    token = new_link(session_factory, "admin")
    assert len(token) >= 43  # 32 random bytes
    signed_in = use_link(console, token)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console/"
    with session_factory() as db:  # only the hash is stored
        hashes = set(db.execute(select(ConsoleSession.token_hash)).scalars())
    assert token not in hashes and len(hashes) == 2

    for page in (
        "/console/",
        "/console/overview/live",
        "/console/devices",
        "/console/devices/a1",
        "/console/campaigns",
        "/console/audit",
        "/console/approvals",
        "/console/profiles",
        "/console/compliance",
    ):
        answer = console.get(page)
        assert answer.status_code == 200, (page, answer.text)
    assert "a1" in console.get("/console/devices").text
    (event,) = _audit(session_factory, "console.sign_in")
    assert event.actor == "user:ann@example.com" and event.details == {"role": "admin", "via": "link"}

    again = use_link(TestClient(console.app, base_url="http://127.0.0.1"), token)  # a second use: refused
    assert again.status_code == 401 and "used or expired" in again.text


def test_an_expired_link_is_refused(console: TestClient[Any], session_factory: sessionmaker[Session]) -> None:
    token = new_link(session_factory, "viewer")
    with session_factory.begin() as db:
        db.execute(update(ConsoleSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert use_link(console, token).status_code == 401
    assert console.get("/console/", follow_redirects=False).status_code == 303


def test_sessions_end_when_idle_at_their_absolute_end_and_at_sign_out(
    console: TestClient[Any], session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sign_in(console, session_factory, "viewer")
    stolen = TestClient(console.app, base_url="http://127.0.0.1", cookies=dict(console.cookies))
    assert stolen.get("/console/devices").status_code == 200

    # used after two minutes: the idle end moves on, but never past the absolute end
    now = utcnow()
    absolute = now + timedelta(seconds=30)
    with session_factory.begin() as db:
        db.execute(
            update(ConsoleSession)
            .where(ConsoleSession.kind == "session")
            .values(
                created_at=absolute - timedelta(hours=settings.console_session_hours),
                last_seen_at=now - timedelta(minutes=2),
            )
        )
    assert console.get("/console/").status_code == 200
    with session_factory() as db:
        row = db.execute(select(ConsoleSession).where(ConsoleSession.kind == "session")).scalar_one()
    assert row.last_seen_at > now - timedelta(seconds=5)
    assert abs((row.expires_at - absolute).total_seconds()) < 1

    with session_factory.begin() as db:  # idle past its end
        db.execute(update(ConsoleSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert console.get("/console/", follow_redirects=False).status_code == 303

    sign_in(console, session_factory, "viewer")
    stolen = TestClient(console.app, base_url="http://127.0.0.1", cookies=dict(console.cookies))
    out = post_form(console, "/console/", "/console/signout")
    assert out.status_code == 303 and out.headers["location"] == "/console/signin"
    assert stolen.get("/console/", follow_redirects=False).status_code == 303  # the copied cookie died too
    assert [e.actor for e in _audit(session_factory, "console.sign_out")] == ["user:ann@example.com"]


def test_forms_without_their_csrf_token_are_refused(
    console: TestClient[Any], session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sign_in(console, session_factory, "operator")
    refused = console.post("/console/devices/a1/labels", data={"key": "ring", "value": "x"})
    assert refused.status_code == 403
    forged = console.post("/console/devices/a1/labels", data={"key": "ring", "value": "x", "_csrf_token": "forged"})
    assert forged.status_code == 403
    with session_factory() as db:
        assert device_labels(db, "a1")["ring"] == "canary"
    console.app.state.audit_buffer.flush(session_factory)
    (refusals,) = _audit(session_factory, "console.csrf")
    assert refusals.outcome == "denied" and refusals.count == 2
    done = post_form(console, "/console/devices/a1", "/console/devices/a1/labels", key="ring", value="x")
    assert done.status_code == 303
    with session_factory() as db:
        assert device_labels(db, "a1")["ring"] == "x"
    (event,) = _audit(session_factory, "device.label")
    assert event.actor == "user:ann@example.com"


def test_a_form_is_refused_from_another_site_or_with_another_sessions_token(
    console: TestClient[Any], session_factory: sessionmaker[Session]
) -> None:
    """Forgeries that carry a valid CSRF pair: one sent from another site (its ``Origin``), and one with the pair
    of another person's session (a cookie a sibling site planted). Both refused with the form unsaved, audited."""
    eve = TestClient(console.app, base_url=BASE_URL)
    before = use_link(eve, new_link(session_factory, "viewer", email="eve@example.com"))
    assert before.cookies.get(CSRF_COOKIE)  # a sign-in issues a new CSRF token, bound to its session
    eve_token = csrf_of(eve.get("/console/").text)
    sign_in(console, session_factory, "operator")
    page = console.get("/console/devices/a1").text
    for origin in ("https://evil.example", "http://127.0.0.1.evil.example"):
        sent = console.post(
            "/console/devices/a1/labels",
            data={"key": "ring", "value": "x", "_csrf_token": csrf_of(page)},
            headers={"Origin": origin},
        )
        assert (sent.status_code, "another site" in sent.text) == (403, True), origin
        assert sent.headers["content-security-policy"]  # error pages carry the security headers too
    console.cookies.set(CSRF_COOKIE, str(eve.cookies.get(CSRF_COOKIE)), domain="127.0.0.1", path="/console")
    planted = console.post("/console/devices/a1/labels", data={"key": "ring", "value": "x", "_csrf_token": eve_token})
    assert (planted.status_code, "does not belong to your session" in planted.text) == (403, True)
    with session_factory() as db:
        assert device_labels(db, "a1")["ring"] == "canary"
    console.app.state.audit_buffer.flush(session_factory)
    assert sum(e.count for e in _audit(session_factory, "console.csrf")) == 3
    sign_in(console, session_factory, "operator")  # a new session, and its own CSRF pair
    token = csrf_of(console.get("/console/devices/a1").text)
    own = console.post(
        "/console/devices/a1/labels",
        data={"key": "ring", "value": "x", "_csrf_token": token},
        headers={"Origin": BASE_URL},  # the console's own site
        follow_redirects=False,
    )
    assert own.status_code == 303


def test_security_headers_and_cookie_flags(
    console: TestClient[Any], session_factory: sessionmaker[Session], settings: Settings
) -> None:
    page = console.get("/console/signin")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    asset = console.get("/console/static/htmx.min.js")
    assert asset.status_code == 200 and asset.headers["x-content-type-options"] == "nosniff"
    assert "htmx" in asset.text[:200]

    cookie = use_link(console, new_link(session_factory, "viewer")).headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # loopback: plain HTTP on the operator's machine
    remote = TestClient(console.app, base_url="http://mdm.example.com")
    cookie = use_link(remote, new_link(session_factory, "viewer")).headers["set-cookie"]
    assert "Secure" in cookie
    # NEXMDM_PUBLIC_URL says https: Secure although a proxy forwards a loopback Host
    https = settings.with_overrides(public_url="https://mdm.example.com")
    with TestClient(create_app(https), base_url="https://127.0.0.1") as proxied:  # TLS ended at the proxy
        cookies = use_link(proxied, new_link(session_factory, "viewer")).headers.get_list("set-cookie")
    assert len(cookies) == 2 and all("Secure" in c for c in cookies)  # the session's and its new CSRF token's


#: role -> (page or action, expected status)
ROLE_TABLE = {
    "viewer": {"devices": 200, "audit": 403, "label": 403, "pause": 403},
    "operator": {"devices": 200, "audit": 403, "label": 303, "pause": 303},
    "admin": {"devices": 200, "audit": 200, "label": 303, "pause": 303},
}


def test_roles_on_pages_and_actions(
    console: TestClient[Any], session_factory: sessionmaker[Session], settings: Settings
) -> None:
    for role, expected in ROLE_TABLE.items():
        campaign = _campaign(session_factory, settings, key=role)
        client = TestClient(console.app, base_url="http://127.0.0.1")
        sign_in(client, session_factory, role)
        assert client.get("/console/devices").status_code == expected["devices"], role
        assert client.get("/console/audit").status_code == expected["audit"], role
        label = post_form(client, "/console/devices/a1", "/console/devices/a1/labels", key="k", value="v")
        assert label.status_code == expected["label"], role
        page = f"/console/campaigns/{campaign}"
        assert post_form(client, page, f"{page}/pause").status_code == expected["pause"], role
        with session_factory() as db:
            assert (fleet.get_campaign(db, campaign)["status"] == "paused") == (expected["pause"] == 303), role
    assert {e.actor for e in _audit(session_factory, "campaign.pause")} == {"user:ann@example.com"}
    assert len(_audit(session_factory, "campaign.pause")) == 2


def test_a_scoped_person_sees_only_their_devices(
    console: TestClient[Any], session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sign_in(console, session_factory, "operator", scope="store=42")
    for hostile in ("", "store=7", "!store", "store in (7,42)", "store=42,store=7", "@state=offline"):
        html = console.get("/console/devices", params={"selector": hostile}).text
        shown = {d for d in ("a1", "a2", "a3", "a4", "a5", "r1") if f'href="/console/devices/{d}"' in html}
        assert shown <= {"a1", "a2", "r1"}, hostile
        if hostile == "":  # no selector: every device of the scope, the revoked r1 too (as the admin API lists)
            assert shown == {"a1", "a2", "r1"}
        if hostile == "store in (7,42)":  # a selector never matches a revoked device
            assert shown == {"a1", "a2"}
    assert console.get("/console/devices/a1").status_code == 200
    assert console.get("/console/devices/a3").status_code == 404  # outside the scope: as if it did not exist
    assert (
        post_form(console, "/console/devices/a1", "/console/devices/a3/labels", key="k", value="v").status_code == 404
    )
    # the label the scope is defined by stays, as over the API: else a device could be moved out of the scope
    # (or into another's)
    for form in ({"key": "store", "value": "7"}, {"remove": "store"}):
        refused = post_form(console, "/console/devices/a1", "/console/devices/a2/labels", **form)
        assert refused.status_code == 403, form
    with session_factory() as db:
        assert device_labels(db, "a2")["store"] == "42"
    assert (
        post_form(console, "/console/devices/a1", "/console/devices/a2/labels", key="k", value="v").status_code == 303
    )
    with session_factory() as db:  # its audit row says under which scope, as a scoped key's does
        row = db.execute(
            select(AuditEvent).where(AuditEvent.action == "device.label", AuditEvent.target == "a2")
        ).scalar_one()
        assert row.actor.startswith("user:") and row.details["scope"] == "store=42"
    campaign = _campaign(session_factory, settings)
    page = f"/console/campaigns/{campaign}"
    # an unscoped campaign reaches past the scope (core.campaigns.require_in_scope): not shown, not changed
    assert console.get(page).status_code == 403
    assert post_form(console, "/console/devices", f"{page}/pause").status_code == 403
    assert console.get("/console/audit").status_code == 403
    live = console.get("/console/overview/live").text
    assert (
        'id="count-total">3<' in live and "Push and ack" not in live
    )  # the scope's figures only (a1, a2 and the revoked r1, as `top` counts)


def test_selector_errors_show_in_place_and_text_is_escaped(
    console: TestClient[Any], session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as db:
        db.execute(update(Device).where(Device.id == "a1").values(model="<script>alert(1)</script>"))
    sign_in(console, session_factory, "viewer")
    page = console.get("/console/devices", params={"selector": "store=42,"})
    assert page.status_code == 200
    assert 'id="selector-error"' in page.text and "invalid selector at position 9" in page.text
    assert 'value="store=42,"' in page.text  # what was typed stays in the bar
    device = console.get("/console/devices/a1").text
    assert "<script>alert(1)</script>" not in device and "&lt;script&gt;alert(1)&lt;/script&gt;" in device
    fragment = console.get(
        "/console/devices", params={"selector": "store=42"}, headers={"HX-Request": "true", "HX-Target": "device-table"}
    )
    assert "<html" not in fragment.text and "a1" in fragment.text and "a3" not in fragment.text


def test_actions_show_their_cli_line_and_curl_call(
    console: TestClient[Any], session_factory: sessionmaker[Session], settings: Settings
) -> None:
    campaign = _campaign(session_factory, settings)
    sign_in(console, session_factory, "operator")
    page = console.get(f"/console/campaigns/{campaign}").text
    assert f"nexmdm campaigns pause {campaign}" in page
    assert f"/v1/campaigns/{campaign}/pause" in page and "curl -X POST" in page
    assert "nexmdm devices label a1 KEY=VALUE" in console.get("/console/devices/a1").text
    listing = console.get("/console/devices", params={"selector": "store=42"}).text
    assert "nexmdm devices list --selector store=42" in listing and "/v1/devices?selector=store%3D42" in listing


def test_role_rules_from_claims() -> None:
    rules = people.parse_role_rules("groups:mdm-admins=admin,groups:store-42=operator@store=42,ring=canary")
    assert [(r.claim, r.value, r.role, r.scope) for r in rules] == [
        ("groups", "mdm-admins", "admin", None),
        ("groups", "store-42", "operator", "store=42,ring=canary"),
    ]
    assert people.role_from_claims(rules, {"groups": ["store-42"]}) == ("operator", "store=42,ring=canary")
    assert people.role_from_claims(rules, {"groups": ["store-42", "mdm-admins"]}) == ("admin", None)
    assert people.role_from_claims(rules, {"groups": "other"}) is None
    with pytest.raises(InvalidArgument):
        people.parse_role_rules("groups:x=root")
    with pytest.raises(InvalidArgument):
        people.parse_role_rules("groups:x=operator@store in (")
    with pytest.raises(InvalidArgument):  # a scope as a key's: no field that changes by itself
        people.parse_role_rules("groups:x=operator@store=42,@state=online")


def test_ended_sessions_and_links_go_with_retention(
    session_factory: sessionmaker[Session], settings: Settings, engine: Any
) -> None:
    new_link(session_factory, "viewer")
    kept = new_link(session_factory, "viewer", email="bob@example.com")
    with session_factory.begin() as db:
        db.execute(
            update(ConsoleSession)
            .where(ConsoleSession.email == "ann@example.com")
            .values(expires_at=utcnow() - timedelta(days=2))
        )
    with session_factory.begin() as db:
        result = people.cleanup_old_console_sessions(db)
    assert result["deleted"] == 1
    with session_factory() as db:
        assert db.execute(select(ConsoleSession.email)).scalars().all() == ["bob@example.com"]
    assert kept


def test_a_profile_rollout_shows_as_a_campaign_of_kind_profile(
    console: TestClient[Any], session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sign_in(console, session_factory)
    with session_factory.begin() as db:
        effective.refresh_stale(db, settings)
    roll(session_factory, settings, profile("pos", "store=42", settings={"wifi": "a"}), None)
    made = roll(session_factory, settings, profile("pos", "store=42", settings={"wifi": "b"}), {"wave_size": 1})
    listing = console.get("/console/campaigns").text
    assert "profile pos v1 → v2" in listing and "<td>profile</td>" in listing
    page = console.get(f"/console/campaigns/{made['rollout']['id']}").text
    assert '<td id="kind">profile</td>' in page and "pos v1 → v2" in page
