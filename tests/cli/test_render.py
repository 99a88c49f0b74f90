"""Stored values are shown as they are: never read as Rich markup, never written as terminal control.

Issue #21: an agent version ``[/red]`` made ``devices list`` and ``devices show`` exit 1 (``MarkupError``),
``[link=…]`` became a link, a token note ``[/bold]`` broke ``tokens list``, and an ESC sequence stored in
a selector reached the operator's terminal through ``campaigns show``. Every field a device or an operator
can set gets the same hostile text, straight into the database (the API refuses control characters, older
rows and other writers may hold them), and every listing and ``show`` command must print it literally.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import typer.main
from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

from core import approvals
from core import campaigns as fleet
from core.access import keys as admin_keys
from core.apk import builds as apk
from core.base.settings import Settings
from core.enrollment import tokens as credentials
from core.events import webhooks
from core.models import (
    AdminKey,
    ApkBuild,
    ApkDownloadEvent,
    Approval,
    AuditEvent,
    Campaign,
    Device,
    DeviceApp,
    DeviceHeartbeat,
    DeviceInventory,
    DeviceLabel,
    EnrollmentToken,
    FcmDispatch,
    WebhookEndpoint,
    WebhookOutbox,
)
from core.storage.types import utcnow
from nexmdm_cli.main import app
from tests.support.approvals import ALICE
from tests.support.cli import Cli, seed_dispatch, seed_download, seed_heartbeat
from tests.support.databases import add_device
from tests.support.fakes.apk import apk_bytes
from tests.support.profiles import apply as apply_profile

#: markup that closes a tag never opened (MarkupError), a link, an ESC sequence, a bell and a bidi override
HOSTILE = "[/red][link=https://evil.example/]x[/link]\x1b[2J\x07\u202e"
#: the same for columns of 16 to 32 characters
SHORT = "[/b]\x1b[2J\x07\u202e"
#: how it must appear: the brackets as typed, the control characters as visible escapes
SHOWN = r"[/red][link=https://evil.example/]x[/link]\x1b[2J\x07\u202e"
#: stored text that refuses controls on the way in (a profile's settings) can still carry markup
MARKUP = "[/red][link=https://evil.example/]x[/link]"
MARKUP_ONLY = {"profiles show"}

#: every command that lists or shows stored values, with its arguments
READS: dict[str, list[str]] = {
    "devices list": [],
    "devices show": ["dev_a"],
    "devices labels": [],
    "heartbeats show": ["dev_a"],
    "tokens list": [],
    "keys list": [],
    "campaigns list": [],
    "campaigns show": ["CAMPAIGN"],
    "campaigns devices": ["CAMPAIGN"],
    "dispatches list": [],
    "dispatches show": ["cmd-1"],
    "apk list": [],
    "apk downloads": [],
    "webhooks list": [],
    "webhooks deliveries": [],
    "audit list": [],
    "apps list": [],
    "apps show": ["com.acme.pos"],
    "approvals list": [],
    "approvals show": ["APPROVAL"],
    "profiles show": ["pos"],
    "top": ["--once"],
}
#: listings of nothing stored: the action catalogue is the code's (and the operator's configuration); and
#: a listing whose every stored text is checked on the way in (a profile's name, priority and selector)
NOTHING_STORED = {"actions list", "actions show", "profiles list"}


def _seed(factory: sessionmaker[Session], tmp: Path) -> str:
    """Every value a device or an operator sets, as HOSTILE; returns the campaign's id."""
    add_device(factory, "dev_a")
    seed_heartbeat(factory, "dev_a", timedelta(minutes=1), battery_pct=50, agent_version="1.0")
    seed_dispatch(factory, "cmd-1", "dev_a", ack_detail=HOSTILE, last_error=HOSTILE)
    seed_dispatch(factory, "cmd-2", "dev_a")
    seed_download(factory, ago=timedelta(minutes=1))
    with factory.begin() as db:
        credentials.create_enrollment_token(db, note="note")
        admin_keys.create_admin_key(db, name="ops")
        _, campaign = fleet.create_campaign(
            db, Settings(), idempotency_key="k", action="ping", device_ids=["dev_a"], note="n"
        )
        apk.add_build(db, Settings(apk_dir=tmp), source=io.BytesIO(apk_bytes()), version_code=2, version_name="2")
        _, endpoint = webhooks.add_endpoint(db, url="https://hooks.example.com/x", events=["device.offline"])
        webhooks.send_test(db, endpoint["id"])
        device_values = {"model": HOSTILE, "os_version": HOSTILE, "agent_version": HOSTILE}
        db.execute(update(Device).values(**device_values, last_status=SHORT, last_network_type=SHORT))
        db.execute(update(DeviceHeartbeat).values(agent_version=HOSTILE, status=SHORT, network_type=SHORT))
        db.execute(insert(DeviceLabel).values(device_id="dev_a", key="k", value=HOSTILE))
        now = utcnow()
        db.execute(
            insert(DeviceInventory).values(
                device_id="dev_a",
                hash="0" * 64,
                manufacturer=HOSTILE,
                serial_withheld=False,
                app_count=1,
                reported_at=now,
                updated_at=now,
            )
        )
        db.execute(
            insert(DeviceApp).values(
                device_id="dev_a", package="com.acme.pos", version_code=1, version_name=HOSTILE[:64]
            )
        )
        db.execute(update(EnrollmentToken).values(note=HOSTILE))
        db.execute(update(AdminKey).values(name=HOSTILE))
        db.execute(update(Campaign).values(note=HOSTILE, selector=HOSTILE, reason=SHORT))
        db.execute(update(ApkBuild).values(version_name=HOSTILE))
        db.execute(update(ApkDownloadEvent).values(ip=HOSTILE[:45], token_id=HOSTILE))
        # an Idempotency-Key is checked (A-Z a-z 0-9 . _ ~ : -) by the API and the CLI, not by the database
        db.execute(update(FcmDispatch).where(FcmDispatch.request_id == "cmd-2").values(request_id=HOSTILE))
        db.execute(update(WebhookEndpoint).values(url=HOSTILE))
        db.execute(update(WebhookOutbox).values(last_error=HOSTILE))
        db.execute(
            insert(AuditEvent).values(
                at=utcnow(), actor=HOSTILE, action="device.label", target=HOSTILE, client_address=HOSTILE, count=1
            )
        )
    return str(campaign["id"])


def test_every_listing_and_show_prints_stored_markup_and_controls_literally(
    cli: Cli, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    readers = {
        " ".join(path)
        for path in _leaves(typer.main.get_command(app))
        if path[-1] in ("list", "show", "labels", "downloads", "deliveries", "devices") or path == ("top",)
    }
    assert readers == set(READS) | NOTHING_STORED, "a new listing: add it to READS"
    campaign_id = _seed(session_factory, tmp_path)
    with session_factory.begin() as db:
        _, approval = approvals.request_command(
            db, Settings(), request_id="w-1", device_id="dev_a", action="wipe", payload={"reason": "r"}, actor=ALICE
        )
        db.execute(update(Approval).values(requested_by=HOSTILE))
    # a profile's text refuses controls on the way in (core.profiles.document): its markup is the threat left
    apply_profile(session_factory, Settings(), {"name": "pos", "settings": {"motd": MARKUP}})
    ids = {"CAMPAIGN": campaign_id, "APPROVAL": approval["id"]}
    wide = Cli(cli.url, cli.env | {"COLUMNS": "3000"})  # no folding: each value stays on one line
    for name, args in READS.items():
        result = wide(*name.split(), *(ids.get(a, a) for a in args))
        output = result.stdout + result.stderr
        assert result.exit_code == 0, (name, output[-2000:])
        assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output, name
        assert "Traceback" not in output, name
        shown = MARKUP if name in MARKUP_ONLY else SHOWN
        assert name == "top" or shown in result.stdout, (name, result.stdout[-3000:])


def _leaves(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(command, "commands", None) or {}
    if not subs:
        return [path]
    return [leaf for name, sub in subs.items() for leaf in _leaves(sub, (*path, name))]


def test_an_audit_client_address_is_never_a_link(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    """Issue #21 item 2: ``[link=…]`` stored as a client address rendered as a link in ``audit list``."""
    address = "[link=https://evil.example/]10.0.0.1[/link]"
    with session_factory.begin() as db:
        db.execute(
            insert(AuditEvent).values(
                at=utcnow(), actor="key:ci", action="auth.failed", client_address=address, outcome="denied", count=3
            )
        )
    result = Cli(cli.url, cli.env | {"COLUMNS": "400"})("audit", "list")
    assert result.exit_code == 0, result.stderr
    assert address in result.stdout
