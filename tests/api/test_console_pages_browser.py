"""The console's third-wave pages in a real browser (Debian's chromium, Playwright), against a seeded fleet:
a device's inventory, compliance and lost-mode location; a profile's versions and plan diff; compliance with
its reasons (htmx); approvals decided by a second admin from the page; a campaign's failure groups (htmx).
Then the overview following ``nexmdm simulate`` live, server and simulator as real processes.

One browser and one server (the app under uvicorn, a SQLite fleet seeded once) serve the page tests of this
module; each test is a person of their own (a browser context, a one-time link). A failure leaves a
screenshot in the test's temporary folder; ``NEXMDM_CONSOLE_SCREENSHOTS=docs/img`` makes docs/console.md's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
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
from core.storage.engine import make_engine, make_session_factory
from core.storage.types import utcnow
from nexmdm_cli.commands.demo import free_port, stop, wait_until_ready
from tests.support.api import live_server
from tests.support.approvals import ask_wipe, audit_rows, wipe_settings
from tests.support.browser import chromium, needs_chromium, new_page, screenshot_on_failure, sign_in, snapshot
from tests.support.console import new_link
from tests.support.databases import DatabaseFactory, migrate
from tests.support.fleet import ack_all, seed_fleet
from tests.support.inventory import APPS, DEVICE, app, body
from tests.support.profiles import noncompliant_a1

pytestmark = needs_chromium
ANN = Actor("user:ann@example.com", "127.0.0.1")


@dataclass
class Console:
    """The module's server and what was seeded for the pages."""

    base: str
    factory: sessionmaker[Session]
    campaign: str
    approval: str


def _seed(factory: sessionmaker[Session], settings: Settings) -> tuple[str, str]:
    """seed_fleet; a1 reports an inventory twice (an app change), is lost with a fix, and is noncompliant on
    ``pos`` (two versions); a campaign to store 7 failed on both devices (a3 with an inventory); a wipe of
    a5 asked by ann. Returns (campaign id, approval id)."""
    seed_fleet(factory)
    with factory.begin() as db:
        put_inventory(db, "a1", check_report(body(apps=APPS)), settings)
        put_inventory(db, "a3", check_report(body(device={**DEVICE, "model": "TC52", "os_version": "10"})), settings)
    with factory.begin() as db:
        put_inventory(db, "a1", check_report(body(apps=[app("com.acme.pos", 4300), *APPS[1:]])), settings)
        locations.start_lost_mode(db, device_id="a1", message="Please call <the shop>", phone=None, request_id="l-1")
        fix = locations.check_fix({"lat": 48.8566, "lon": 2.3522, "accuracy_m": 8.0, "fixed_at": utcnow().isoformat()})
        locations.record_fix(db, device_id="a1", fix=fix, source="lost_mode")
    noncompliant_a1(factory, settings)
    with factory.begin() as db:
        _, made = fleet.create_campaign(db, settings, idempotency_key="pages-1", action="ping", selector="store=7")
    campaign = str(made["id"])
    fleet.run_due(factory, settings)
    assert ack_all(factory, campaign, status="failed") == 2
    with factory.begin() as db:
        db.execute(
            update(FcmDispatch).where(FcmDispatch.campaign_id == campaign).values(ack_detail="INSUFFICIENT_STORAGE")
        )
    fleet.run_due(factory, settings)
    return campaign, ask_wipe(factory, settings, "wipe-1", "a5", actor=ANN)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def console(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    url = databases.create("sqlite")
    migrate(url)
    settings = wipe_settings(Settings(database_url=url, data_dir=tmp_path_factory.mktemp("console-data")))
    engine = make_engine(url)
    factory = make_session_factory(engine, settings)
    campaign, approval = _seed(factory, settings)
    with live_server(settings) as port:
        yield Console(f"http://127.0.0.1:{port}", factory, campaign, approval)
    engine.dispose()


@pytest.fixture
def person(browser: Any, console: Console) -> Iterator[Callable[..., Any]]:
    """``person(role, email)``: a page of its own, signed in; each must end without a script error (one
    refused by the CSP, an htmx error)."""
    pages: list[Any] = []
    with ExitStack() as stack:

        def signed_in(role: str, email: str = "ann@example.com") -> Any:
            page = stack.enter_context(new_page(browser))
            pages.append(page)
            sign_in(page, console.base, new_link(console.factory, role, email=email))
            return page

        yield signed_in
        assert [page.errors for page in pages] == [[] for _ in pages]


def test_a_device_page_shows_its_inventory_compliance_and_lost_mode_location(
    person: Callable[..., Any], console: Console, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = person("operator", "bob@example.com")
    with screenshot_on_failure(page, tmp_path):
        page.goto(f"{console.base}/console/devices?selector=store%3D42")
        page.click("#device-table >> text=a1")
        expect(page).to_have_url(f"{console.base}/console/devices/a1")
        inventory = page.locator("#inventory")
        expect(page.locator("#app-count")).to_have_text("3")
        expect(inventory.locator("tr", has_text="model")).to_contain_text("Galaxy A10")
        apps, changes = inventory.locator("table").nth(1), inventory.locator("table").nth(2)
        expect(apps.locator("tbody tr td:first-child")).to_have_text(
            ["com.acme.pos", "com.android.chrome", "org.example.notes"]
        )
        expect(apps.locator("tr", has_text="com.acme.pos").locator("td.num")).to_have_text("4300")
        update = changes.locator("tr", has=page.locator(".change-updated"))
        expect(update.locator("td")).to_have_text([re.compile("ago"), "com.acme.pos", "updated", "4100", "4300"])
        expect(page.locator("#compliance-state")).to_contain_text("noncompliant INVALID_VALUE")
        expect(page.locator("#compliance tr", has_text="settings/wifi")).to_contain_text("INVALID_VALUE")
        expect(page.locator("#location")).to_have_text("48.8566, 2.3522 (± 8.0 m)")
        expect(page.locator("#lost-mode")).to_contain_text("Please call <the shop>")  # text, not markup
        page.evaluate("document.getElementById('lost-mode').scrollIntoView()")  # lost mode, compliance, inventory
        snapshot(page, "device")
        page.click("#compliance-state >> text=INVALID_VALUE")  # the reason's devices
        expect(page.locator("#device-table")).to_contain_text("a1")
        expect(page.locator("#device-table")).not_to_contain_text("a2")
    assert ("location.read", "user:bob@example.com", "success") in audit_rows(console.factory, "a1")


def test_a_profile_page_shows_its_versions_and_a_versions_plan_diff(
    person: Callable[..., Any], console: Console, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = person("viewer")
    with screenshot_on_failure(page, tmp_path):
        page.goto(f"{console.base}/console/profiles")
        row = page.locator("table.profiles tr", has_text="pos")
        expect(row).to_contain_text("store=42")
        expect(row.locator("td.num")).to_have_text(["5", "2", "2"])  # priority, version, devices matched
        row.locator("a").click()
        expect(page).to_have_url(f"{console.base}/console/profiles/pos")
        versions = page.locator("#versions tbody tr")
        expect(versions).to_have_count(2)
        expect(versions.first).to_contain_text("2 (current)")
        expect(versions.first).to_contain_text("settings/motd settings/wifi")
        expect(page.locator("#plan h2")).to_have_text("Version 2 against version 1")
        motd = page.locator("#plan tr", has_text="settings/motd")
        expect(motd.locator("td.old")).to_have_text("(not set)")
        expect(motd.locator("td.new")).to_have_text('"<script>alert(1)</script>"')  # shown, never run
        wifi = page.locator("#plan tr", has_text="settings/wifi")
        expect(wifi.locator("td.old")).to_contain_text('"corp"')
        expect(wifi.locator("td.new")).to_contain_text('"shop"')
        snapshot(page, "profile")
        versions.nth(1).locator("a").click()
        expect(page).to_have_url(f"{console.base}/console/profiles/pos?version=1")
        expect(page.locator("#plan h2")).to_have_text("Version 1 against nothing (the first version)")
        expect(page.locator("#plan")).to_contain_text("nexmdm profiles rollback pos --to-version 1")
        expect(page.locator("#document")).not_to_contain_text("motd")


def test_the_compliance_page_counts_states_and_loads_its_reasons(
    person: Callable[..., Any], console: Console, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = person("viewer")
    with screenshot_on_failure(page, tmp_path):
        page.goto(f"{console.base}/console/compliance")
        expect(page.locator("#state-noncompliant")).to_have_text("1 (20%)")
        expect(page.locator("#state-pending")).to_have_text("1 (20%)")
        reason = page.locator("#reason-INVALID_VALUE")  # filled in by htmx after the page is shown
        expect(reason).to_have_text("1")
        by_profile = page.locator("#by-profile tr", has_text="pos")
        expect(by_profile.locator("td.num")).to_have_text(["0", "1", "1", "0"])
        snapshot(page, "compliance")
        reason.locator("a").click()
        expect(page).to_have_url(f"{console.base}/console/devices?selector=%40noncompliant%28INVALID_VALUE%29")
        expect(page.locator("#device-table tbody tr")).to_have_count(1)
        expect(page.locator("#device-table")).to_contain_text("a1")


def test_an_approval_is_refused_to_the_admin_who_asked_and_approved_by_a_second_one(
    person: Callable[..., Any], console: Console, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    wipe = console.approval
    ann = person("admin")
    with screenshot_on_failure(ann, tmp_path, "ann"):
        ann.click("nav >> text=Approvals")
        row = ann.locator(f"tr#{wipe}")
        expect(row).to_contain_text("awaiting approval")
        expect(row).to_contain_text("user:ann@example.com")
        ann.click(f"#approve-{wipe}")
        expect(ann.locator("#approval-error")).to_contain_text("another admin must approve it")
        assert ann.errors == ["Failed to load resource: the server responded with a status of 403 (Forbidden)"]
        ann.errors.clear()  # the refusal's page is a 403, as the API's answer would be
    bob = person("admin", "bob@example.com")
    with screenshot_on_failure(bob, tmp_path, "bob"):
        bob.goto(f"{console.base}/console/approvals")
        bob.click(f"#approve-{wipe}")
        expect(bob).to_have_url(f"{console.base}/console/approvals")
        row = bob.locator(f"tr#{wipe}")
        expect(row.locator(".approval-approved")).to_have_text("approved")
        expect(row).to_contain_text("user:bob@example.com")
        expect(bob.locator(f"#approve-{wipe}")).to_have_count(0)  # decided: only cancel is left
        expect(bob.locator(f"#cancel-{wipe}")).to_be_visible()
        snapshot(bob, "approvals")
    with console.factory() as db:
        decided = approvals.get_approval(db, wipe)
    assert (decided["state"], decided["decided_by"]) == ("approved", "user:bob@example.com")


def test_a_campaign_page_loads_its_failure_groups(person: Callable[..., Any], console: Console, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = person("viewer")
    with screenshot_on_failure(page, tmp_path):
        page.goto(f"{console.base}/console/campaigns")
        page.click(f"text={console.campaign}")
        groups = page.locator("#failure-groups .failure-group")  # filled in by htmx after the page is shown
        expect(groups).to_have_count(2)
        expect(page.locator("#failure-groups")).to_contain_text("2 failed, by reason, model and Android version")
        expect(groups.nth(0)).to_have_text("1 × INSUFFICIENT_STORAGE on TC52 / 10: a3")
        expect(groups.nth(1)).to_have_text("1 × INSUFFICIENT_STORAGE on unknown / unknown: a4")
        page.evaluate("document.getElementById('failures').scrollIntoView()")
        snapshot(page, "failures")
        groups.nth(0).locator("a", has_text="a3").click()
        expect(page).to_have_url(f"{console.base}/console/devices/a3")
        expect(page.locator("#inventory")).to_contain_text("TC52")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_overview_follows_a_simulated_fleet_without_a_reload(
    browser: Any, settings: Settings, engine: Any, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """``nexmdm serve`` and ``nexmdm simulate`` as real processes on one database; the overview, opened on an
    empty fleet, shows the simulated devices online and their heartbeats by htmx's refresh alone."""
    from playwright.sync_api import expect

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    nexmdm = [sys.executable, "-c", "from nexmdm_cli.main import run; run()"]
    env = os.environ | {"NEXMDM_DATABASE_URL": settings.database_url, "NEXMDM_DATA_DIR": str(tmp_path)}
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [*nexmdm, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    simulate = [*nexmdm, "simulate", "--devices", "4", "--duration", "6", "--interval", "1", "--url", base, "--json"]
    simulator: subprocess.Popen[bytes] | None = None
    try:
        wait_until_ready(base, server)
        with new_page(browser) as page, screenshot_on_failure(page, tmp_path):
            sign_in(page, base, new_link(session_factory, "viewer"))
            expect(page.locator("#count-total")).to_have_text("0")
            heartbeats = page.locator("#live tr", has=page.locator("th", has_text="stored")).locator("td.num")
            expect(heartbeats).to_have_text("0")
            page.evaluate("window.loadedOnce = true")  # gone if the page were loaded again
            simulator = subprocess.Popen(simulate, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            expect(page.locator("#count-online")).to_have_text("4", timeout=30_000)
            expect(page.locator("#count-total")).to_have_text("4")
            expect(heartbeats).not_to_have_text("0")
            assert page.evaluate("window.loadedOnce") is True and page.url == f"{base}/console/"
            assert page.errors == []
        out, err = simulator.communicate(timeout=60)
        assert simulator.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["enrolled"] == 4 and report["errors_by_status"] == {}
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        stop(server)
