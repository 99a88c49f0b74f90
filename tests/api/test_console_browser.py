"""The console in a real browser: Debian's chromium driven by Playwright against ``nexmdm serve``'s app under
uvicorn. A person signs in with a one-time link, filters the devices with the selector bar (htmx) and pauses
a campaign. On failure a screenshot goes to the test's temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from tests.support.api import live_server
from tests.support.browser import chromium, needs_chromium, new_page, screenshot_on_failure, snapshot
from tests.support.console import new_link
from tests.support.databases import add_device
from tests.support.fleet import seed_fleet

pytestmark = needs_chromium


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page of Debian's chromium; ``page.errors`` collects what the page's console and scripts report."""
    with chromium() as browser, new_page(browser) as page:
        yield page


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_person_signs_in_filters_devices_and_pauses_a_campaign(
    browser_page: Any, settings: Settings, engine: Any, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    seed_fleet(session_factory)
    with session_factory.begin() as db:
        _, campaign = fleet.create_campaign(
            db, settings, idempotency_key="browser-1", action="ping", selector="all", waves={"size": 1}
        )
    token = new_link(session_factory, "operator")
    with live_server(settings) as port, screenshot_on_failure(page, tmp_path):
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/console/auth/link#token={token}")
        page.click("#sign-in")
        expect(page).to_have_url(f"{base}/console/")
        expect(page.locator("#count-total")).to_have_text("6")
        add_device(session_factory, "a6")  # htmx refreshes the overview's figures every 5 s
        expect(page.locator("#count-total")).to_have_text("7", timeout=8_000)
        snapshot(page, "overview")

        page.click("nav >> text=Devices")
        expect(page.locator("#device-table")).to_contain_text("a3")
        page.fill("#selector", "store=42")
        page.press("#selector", "Enter")  # htmx swaps the table and pushes the URL
        expect(page.locator("#device-table")).not_to_contain_text("a3")
        expect(page.locator("#device-table")).to_contain_text("a1")
        expect(page).to_have_url(f"{base}/console/devices?selector=store%3D42")
        snapshot(page, "devices")
        page.fill("#selector", "store=42,")
        page.press("#selector", "Enter")
        expect(page.locator("#selector-error")).to_contain_text("invalid selector at position 9")

        page.goto(f"{base}/console/campaigns/{campaign['id']}")
        expect(page.locator("#campaign-status")).to_have_text("running")
        page.click("#pause")
        expect(page.locator("#campaign-status")).to_have_text("paused")
        snapshot(page, "campaign")
    assert page.errors == []  # no script refused by the CSP, no error in the page
    with session_factory() as db:
        assert fleet.get_campaign(db, campaign["id"])["status"] == "paused"
