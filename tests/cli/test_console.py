"""``nexmdm console link``: a one-time sign-in URL that signs a person in once, with the role and scope given."""

from __future__ import annotations

from typing import Any

from core.base.settings import Settings
from tests.support.cli import Cli, one_error_line
from tests.support.console import console_client, use_link


def test_console_link_prints_a_url_that_signs_in_once(cli: Cli, settings: Settings, engine: Any) -> None:
    made = cli.json("console", "link", "--role", "operator", "--scope", "store=42", "--email", "ann@example.com")
    assert made["role"] == "operator" and made["scope"] == "store=42" and made["expires_in_seconds"] == 600
    base, _, token = made["url"].partition("#token=")
    assert base == "http://127.0.0.1:8000/console/auth/link" and token.startswith("nxl_") and len(token) >= 47

    plain = cli("console", "link", "--role", "viewer", "--url", "https://mdm.example.com/")
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout.startswith("https://mdm.example.com/console/auth/link#token=nxl_")
    assert "only once" in plain.stderr

    with console_client(settings) as client:
        assert use_link(client, token).status_code == 303
        assert "operator @ <code>store=42</code>" in client.get("/console/devices").text
        assert use_link(client, token).status_code == 401


def test_console_link_refuses_bad_input_in_one_line(cli: Cli) -> None:
    assert "role must be one of" in one_error_line(cli("console", "link", "--role", "root"))
    assert "invalid selector" in one_error_line(cli("console", "link", "--role", "viewer", "--scope", "store in ("))
    assert "not an email address" in one_error_line(cli("console", "link", "--role", "viewer", "--email", "x"))
