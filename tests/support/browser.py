"""The console in a real browser: Debian's chromium (``make tools``) driven by Playwright, one browser per
test module; a page that collects what its console and scripts report; the screenshots the docs show
(``NEXMDM_CONSOLE_SCREENSHOTS=DIR``) and the one a failure leaves behind."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
#: every browser test: slow, and skipped where Debian's chromium is missing (``make tools`` installs it)
needs_chromium = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (make tools)"),
]


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright (Playwright's own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Any) -> Iterator[Any]:
    """A page in a context of its own (its own cookies: one person); ``page.errors`` collects what the page's
    console and scripts report (a script refused by the CSP, an htmx error)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    try:
        yield page
    finally:
        context.close()


def snapshot(page: Any, name: str) -> None:
    """With ``NEXMDM_CONSOLE_SCREENSHOTS=DIR``, the page as docs/console.md shows it (``DIR/console-NAME.png``)."""
    folder = os.environ.get("NEXMDM_CONSOLE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"console-{name}.png"))


@contextmanager
def screenshot_on_failure(page: Any, folder: Path, name: str = "failure") -> Iterator[None]:
    """On a failure, the whole page as a PNG in ``folder`` (the test's temporary folder), named in the output."""
    try:
        yield
    except BaseException:
        shot = folder / f"console-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failure: {shot}")
        raise


def sign_in(page: Any, base: str, token: str) -> None:
    """Open a one-time link and press "Sign in", as a person does; the overview follows."""
    page.goto(f"{base}/console/auth/link#token={token}")
    page.click("#sign-in")
    page.wait_for_url(f"{base}/console/")
