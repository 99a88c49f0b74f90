"""The console in a real browser: Debian's chromium driven by Playwright against ``nexmdm serve``'s app under
uvicorn. A person signs in with a one-time link, filters the devices with the selector bar (htmx) and pauses
a campaign. On failure a screenshot goes to the test's temporary folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from tests.support.api import live_server
from tests.support.console import new_link
from tests.support.databases import add_device
from tests.support.fleet import seed_fleet

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (make tools)"),
]


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page of Debian's chromium; ``page.errors`` collects what the page's console and scripts report."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(10_000)
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors
        try:
            yield page
        finally:
            browser.close()


def snapshot(page: Any, name: str) -> None:
    """With ``NEXMDM_CONSOLE_SCREENSHOTS=DIR``, the page as docs/console.md shows it (``DIR/console-NAME.png``)."""
    folder = os.environ.get("NEXMDM_CONSOLE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"console-{name}.png"))


@contextmanager
def screenshot_on_failure(page: Any, folder: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        shot = folder / "console-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failure: {shot}")
        raise


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
