"""``nexmdm approvals`` and ``nexmdm send wipe`` against the real databases."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import DEFAULT_ACTIONS, Settings
from tests.support.approvals import ask_wipe, audit_rows, dispatch_count, wipe_settings
from tests.support.cli import Cli, one_error_line
from tests.support.databases import add_device


@pytest.fixture
def wipe_cli(cli: Cli) -> Cli:
    return Cli(cli.url, cli.env | {"NEXMDM_ACTIONS": ",".join((*DEFAULT_ACTIONS, "wipe"))})


def test_send_wipe_asks_for_an_approval_that_the_same_user_cannot_give(
    wipe_cli: Cli, session_factory: sessionmaker[Session]
) -> None:
    add_device(session_factory, "dev_001")
    asked = wipe_cli.json("send", "wipe", "--device", "dev_001", "--payload", '{"reason": "stolen"}')
    assert asked["state"] == "awaiting_approval" and asked["created"] is True
    assert asked["requested_by"].startswith("cli:") and dispatch_count(session_factory) == 0
    own = wipe_cli("approvals", "approve", asked["id"])
    assert own.exit_code == 1 and "another admin must approve" in one_error_line(own)
    assert audit_rows(session_factory, asked["id"])[-1][2] == "denied"  # committed though refused
    listed = wipe_cli.json("approvals", "list", "--state", "awaiting_approval")
    assert [item["id"] for item in listed["items"]] == [asked["id"]]
    table = wipe_cli("approvals", "list")
    assert table.exit_code == 0 and asked["id"] in table.stdout and "dev_001" in table.stdout
    cancelled = wipe_cli.json("approvals", "cancel", asked["id"])
    assert cancelled["state"] == "cancelled"
    again = wipe_cli("approvals", "cancel", asked["id"])
    assert again.exit_code == 4 and "cancelled" in one_error_line(again)


def test_approve_show_and_deny_a_request_of_another_admin(
    wipe_cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    add_device(session_factory, "dev_001")
    first = ask_wipe(session_factory, wipe_settings(settings), request_id="wipe-a")
    second = ask_wipe(session_factory, wipe_settings(settings), request_id="wipe-b")
    approved = wipe_cli("approvals", "approve", first)
    assert approved.exit_code == 0, approved.stderr
    assert "approved" in approved.stderr and "nexmdm approvals cancel" in approved.stderr
    shown = wipe_cli.json("approvals", "show", first)
    assert shown["state"] == "approved" and shown["decided_by"].startswith("cli:")
    assert "release_at" in wipe_cli("approvals", "show", first).stdout
    assert wipe_cli.json("approvals", "deny", second)["state"] == "denied"
    unknown = wipe_cli("approvals", "show", "apr_00000000000000000000000000")
    assert unknown.exit_code == 3 and one_error_line(unknown)
    assert dispatch_count(session_factory) == 0


def test_a_wipe_campaign_from_the_cli_waits(wipe_cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_001")
    add_device(session_factory, "dev_002")
    asked = wipe_cli.json("send", "wipe", "--payload", '{"reason": "decommissioned"}', "--all", "--yes")
    assert asked["kind"] == "campaign" and asked["state"] == "awaiting_approval"
    campaign = wipe_cli.json("campaigns", "show", asked["target_id"])
    assert campaign["status"] == "awaiting_approval" and dispatch_count(session_factory) == 0
