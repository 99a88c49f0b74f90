"""The console's pages for what landed after it (both databases): a device's inventory, apps and app
changes, a lost device's location (operators and admins only, each read audited), a campaign's outcome and
failure groups, and the approvals page with its decisions (the second-admin rule, CSRF, roles, scopes)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core import approvals
from core import campaigns as fleet
from core.base.settings import Settings
from core.devices import locations
from core.events.audit import Actor
from core.inventory.document import check_report
from core.inventory.store import put_inventory
from core.models import FcmDispatch
from core.storage.types import utcnow
from tests.support.approvals import ALICE, ask_wipe, audit_rows, wipe_settings
from tests.support.console import console_client, csrf_of, post_form, sign_in
from tests.support.fleet import ack_all, seed_fleet
from tests.support.inventory import APPS, app, body
from tests.support.profiles import noncompliant_a1

ANN = Actor("user:ann@example.com", "127.0.0.1")


@pytest.fixture
def state_settings(settings: Settings) -> Settings:
    return wipe_settings(settings)


@pytest.fixture
def console(state_settings: Settings, engine: Any, session_factory: sessionmaker[Session]) -> Any:
    seed_fleet(session_factory)
    with console_client(state_settings) as client:
        yield client


def _client(console: TestClient[Any], factory: sessionmaker[Session], role: str, **kwargs: Any) -> TestClient[Any]:
    client = TestClient(console.app, base_url="http://127.0.0.1")
    sign_in(client, factory, role, **kwargs)
    return client


def _location_reads(factory: sessionmaker[Session], device_id: str) -> list[tuple[str, str, str]]:
    return [row for row in audit_rows(factory, device_id) if row[0] == "location.read"]


def test_a_device_page_shows_its_inventory_and_a_lost_devices_location_to_operators_only(
    console: TestClient[Any], session_factory: sessionmaker[Session], state_settings: Settings
) -> None:
    with session_factory.begin() as db:
        put_inventory(db, "a1", check_report(body(apps=APPS)), state_settings)
    with session_factory.begin() as db:  # one update: an app change to show
        put_inventory(db, "a1", check_report(body(apps=[app("com.acme.pos", 4300), *APPS[1:]])), state_settings)
        locations.start_lost_mode(db, device_id="a1", message="Please call <the shop>", phone=None, request_id="l-1")
        fix = locations.check_fix({"lat": 48.8566, "lon": 2.3522, "accuracy_m": 8.0, "fixed_at": utcnow().isoformat()})
        locations.record_fix(db, device_id="a1", fix=fix, source="lost_mode")

    viewer = _client(console, session_factory, "viewer").get("/console/devices/a1").text
    assert "Galaxy A10" in viewer and 'id="app-count">3<' in viewer
    assert "<code>com.android.chrome</code>" in viewer and 'class="change-updated">updated<' in viewer
    assert "nexmdm devices show a1 --apps" in viewer and "/v1/devices/a1/apps" in viewer
    assert "48.8566" not in viewer and "lost-mode" not in viewer and "Please call" not in viewer
    assert _location_reads(session_factory, "a1") == []  # a viewer's page reads no location

    operator = _client(console, session_factory, "operator", email="bob@example.com")
    page = operator.get("/console/devices/a1").text
    assert 'id="lost-mode"' in page and "48.8566, 2.3522" in page and "Please call &lt;the shop&gt;" in page
    assert "nexmdm devices location a1" in page and "/v1/devices/a1/location" in page
    assert _location_reads(session_factory, "a1") == [("location.read", "user:bob@example.com", "success")]
    other = operator.get("/console/devices/a2").text  # not lost: no location read, and no inventory yet
    assert "No inventory reported yet" in other and 'id="lost-mode"' not in other
    assert _location_reads(session_factory, "a2") == []
    assert len(_location_reads(session_factory, "a1")) == 1


def test_a_campaign_page_shows_its_outcome_and_failure_groups(
    console: TestClient[Any], session_factory: sessionmaker[Session], state_settings: Settings
) -> None:
    with session_factory.begin() as db:
        _, made = fleet.create_campaign(
            db,
            state_settings,
            idempotency_key="outcome-1",
            action="ping",
            selector="store in (7,42)",
            success_when="@agent_version>=2.0",
            outcome_timeout_seconds=600,
        )
    campaign = str(made["id"])
    fleet.run_due(session_factory, state_settings)  # the first wave
    assert ack_all(session_factory, campaign, status="failed") == 2
    with session_factory.begin() as db:
        db.execute(update(FcmDispatch).values(ack_detail="INSUFFICIENT_STORAGE", finished_at=utcnow()))
    fleet.run_due(session_factory, state_settings)

    viewer = _client(console, session_factory, "viewer")
    page = viewer.get(f"/console/campaigns/{campaign}").text
    assert "<code>@agent_version&gt;=2.0</code>" in page and 'id="skipped">2<' in page and 'id="succeeded">0<' in page
    assert f'hx-get="/console/campaigns/{campaign}/failures"' in page  # loaded after the page is shown
    assert f"nexmdm campaigns failures {campaign}" in page and f"/v1/campaigns/{campaign}/failures" in page
    fragment = viewer.get(f"/console/campaigns/{campaign}/failures", headers={"HX-Request": "true"}).text
    assert "<html" not in fragment and "2 × <code>INSUFFICIENT_STORAGE</code> on unknown / unknown" in fragment
    assert 'href="/console/devices/a3">a3</a>' in fragment and 'href="/console/devices/a4">a4</a>' in fragment
    whole = viewer.get(f"/console/campaigns/{campaign}/failures").text  # without JavaScript: a page
    assert "<html" in whole and "INSUFFICIENT_STORAGE" in whole
    quiet = _campaign_without_failures(session_factory, state_settings)
    assert "No target failed." in viewer.get(f"/console/campaigns/{quiet}").text


def _campaign_without_failures(factory: sessionmaker[Session], settings: Settings) -> str:
    with factory.begin() as db:
        _, made = fleet.create_campaign(db, settings, idempotency_key="quiet", action="ping", selector="store=42")
    return str(made["id"])


def _state(factory: sessionmaker[Session], approval_id: str) -> str:
    with factory() as db:
        return str(approvals.get_approval(db, approval_id)["state"])


def test_approvals_are_decided_from_the_console_by_a_second_admin(
    console: TestClient[Any], session_factory: sessionmaker[Session], state_settings: Settings
) -> None:
    mine = ask_wipe(session_factory, state_settings, "wipe-1", "a1", actor=ANN)
    theirs = ask_wipe(session_factory, state_settings, "wipe-2", "a2", actor=ALICE)
    page = "/console/approvals"

    ann = _client(console, session_factory, "admin")
    listing = ann.get(page).text
    assert mine in listing and theirs in listing and 'href="/console/approvals"' in listing
    assert f"nexmdm approvals approve {mine}" in listing and f"/v1/approvals/{mine}/approve" in listing
    refused = post_form(ann, page, f"{page}/{mine}/approve")  # the admin who asked
    assert refused.status_code == 403 and 'id="approval-error"' in refused.text
    assert "another admin must approve it" in refused.text and _state(session_factory, mine) == "awaiting_approval"
    assert ("approval.approve", "user:ann@example.com", "denied") in audit_rows(session_factory, mine)  # committed
    assert ann.post(f"{page}/{theirs}/deny", data={"key": "x"}).status_code == 403  # no CSRF token
    assert _state(session_factory, theirs) == "awaiting_approval"

    bob = _client(console, session_factory, "admin", email="bob@example.com")
    assert post_form(bob, page, f"{page}/{mine}/approve").status_code == 303
    with session_factory() as db:
        assert approvals.get_approval(db, mine)["decided_by"] == "user:bob@example.com"
    assert post_form(bob, page, f"{page}/{theirs}/deny").status_code == 303
    again = post_form(bob, page, f"{page}/{theirs}/deny")  # closed: the page's error, not a 500
    assert again.status_code == 409 and "can no longer be denied" in again.text
    assert audit_rows(session_factory, theirs)[-2:] == [
        ("approval.deny", "user:bob@example.com", "success"),
        ("approval.deny", "user:bob@example.com", "denied"),
    ]
    lab = ask_wipe(session_factory, state_settings, "wipe-4", "a5", actor=ANN)
    with console_client(state_settings.with_overrides(allow_self_approval=True)) as one_admin:
        sign_in(one_admin, session_factory, "admin")  # ann again: NEXMDM_ALLOW_SELF_APPROVAL lets her approve
        assert post_form(one_admin, page, f"{page}/{lab}/approve").status_code == 303
    assert _state(session_factory, lab) == "approved"
    bad = bob.post(f"{page}/nonsense/deny", data={"_csrf_token": csrf_of(bob.get(page).text)})
    assert bad.status_code == 422 and "is not an approval id" in bad.text  # a precise error page


def test_approval_roles_and_scopes_in_the_console(
    console: TestClient[Any], session_factory: sessionmaker[Session], state_settings: Settings
) -> None:
    wipe = ask_wipe(session_factory, state_settings, "wipe-3", "a4")
    page = "/console/approvals"

    viewer = _client(console, session_factory, "viewer")
    listing = viewer.get(page).text
    assert wipe in listing and f'id="approve-{wipe}"' not in listing and f'id="cancel-{wipe}"' not in listing
    assert post_form(viewer, page, f"{page}/{wipe}/cancel").status_code == 403

    operator = _client(console, session_factory, "operator")
    listing = operator.get(page).text
    assert f'id="cancel-{wipe}"' in listing and f'id="approve-{wipe}"' not in listing
    assert post_form(operator, page, f"{page}/{wipe}/approve").status_code == 403
    assert _state(session_factory, wipe) == "awaiting_approval"
    assert post_form(operator, page, f"{page}/{wipe}/cancel").status_code == 303
    assert _state(session_factory, wipe) == "cancelled"

    scoped = _client(console, session_factory, "admin", scope="store=7")
    assert scoped.get(page).status_code == 403  # closed to scoped people, as the API to scoped keys
    assert 'href="/console/approvals"' not in scoped.get("/console/devices").text
    assert post_form(scoped, "/console/devices", f"{page}/{wipe}/deny").status_code == 403


def test_profile_and_compliance_pages_for_a_viewer(
    console: TestClient[Any], session_factory: sessionmaker[Session], state_settings: Settings
) -> None:
    noncompliant_a1(session_factory, state_settings)
    sign_in(console, session_factory, "viewer")
    listing = console.get("/console/profiles")
    assert listing.status_code == 200, listing.text
    assert 'href="/console/profiles/pos"' in listing.text and "nexmdm profiles apply -f FILE" in listing.text

    page = console.get("/console/profiles/pos").text
    assert page.index("?version=2") < page.index("?version=1")  # newest first
    assert "<code>settings/motd</code> <code>settings/wifi</code>" in page  # the keys version 2 changed
    assert "Version 2 against version 1" in page and "(not set)" in page  # motd is new
    assert "<script>alert(1)</script>" not in page  # escaped as text, readable (not tojson's \\u003c)
    assert "<code>&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;</code>" in page
    old = console.get("/console/profiles/pos", params={"version": "1"}).text
    assert "Version 1 against nothing" in old and "nexmdm profiles rollback pos --to-version 1" in old
    assert "$NEXMDM_URL/v1/profiles/pos/rollback" in old and "{&#34;to_version&#34;:1}" in old
    for bad in ("x", "0", "²", "9" * 5000):
        assert console.get("/console/profiles/pos", params={"version": bad}).status_code == 422, bad
    assert console.get("/console/profiles/pos", params={"version": "9"}).status_code == 404
    assert console.get("/console/profiles/nope").status_code == 404

    counts = console.get("/console/compliance").text
    assert 'id="state-noncompliant"><a href="/console/devices?selector=%40compliance%3Dnoncompliant">1<' in counts
    assert 'hx-get="/console/compliance/reasons?selector="' in counts  # the reasons follow (htmx) ...
    reasons = console.get("/console/compliance/reasons").text  # ... or as a page of their own
    link = '<a href="/console/devices?selector=%40noncompliant%28INVALID_VALUE%29">1<'
    assert f'id="reason-INVALID_VALUE">{link}' in reasons
    fragment = console.get("/console/compliance/reasons", headers={"HX-Request": "true"}).text
    assert "<html" not in fragment and 'id="reason-INVALID_VALUE"' in fragment
    assert 'href="/console/profiles/pos">pos</a>' in counts  # grouped by profile
    pixel = "/console/devices?selector=%40model%3D%22Pixel+8%22%2C%40compliance%3D"  # a2's model, by state
    assert pixel in counts
    filtered = console.get("/console/devices", params={"selector": "@noncompliant(INVALID_VALUE)"}).text
    assert 'href="/console/devices/a1"' in filtered and 'href="/console/devices/a2"' not in filtered
    device = console.get("/console/devices/a1").text
    assert 'id="compliance-state">noncompliant' in device and "INVALID_VALUE" in device
    live = console.get("/console/overview/live").text  # the overview shows what `top` shows: compliance too
    assert 'id="compliance-noncompliant">1<' in live
    assert '<code>settings/wifi</code></td><td class="compliance-noncompliant">' in device


def test_profile_pages_are_closed_to_scoped_people_and_compliance_is_scoped(
    console: TestClient[Any], session_factory: sessionmaker[Session], state_settings: Settings
) -> None:
    noncompliant_a1(session_factory, state_settings)
    scoped = _client(console, session_factory, "admin", scope="store=7")
    assert scoped.get("/console/profiles").status_code == 403
    assert scoped.get("/console/profiles/pos").status_code == 403
    counts = scoped.get("/console/compliance")
    assert counts.status_code == 200 and 'id="state-noncompliant"><a' in counts.text
    assert "no noncompliant device" in counts.text and "/console/compliance/reasons" not in counts.text
    assert 'id="reason-INVALID_VALUE"' not in scoped.get("/console/compliance/reasons").text
    bad = scoped.get("/console/compliance", params={"selector": "store in (7"}).text
    assert 'id="selector-error"' in bad
