"""``nexmdm actions``, ``send`` with a typed payload, ``dispatches show`` with a result or error code, and
``devices location`` (audited), on both databases."""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands import dispatches
from core.models import AuditEvent, FcmDispatch
from tests.support.cli import Cli, one_error_line
from tests.support.databases import add_device

FIX = {"lat": 51.5074, "lon": -0.1278, "accuracy_m": 15, "fixed_at": "2026-01-02T10:00:00Z"}


def test_actions_list_and_show(cli: Cli) -> None:
    items = {a["name"]: a for a in cli.json("actions", "list")["items"]}
    assert items["lost_mode"]["payload_schema"]["required"] == ["message"] and items["wipe"]["destructive"]
    table = cli("actions", "list")
    assert table.exit_code == 0 and "seconds*" in table.stdout and "lat*, lon*" in table.stdout
    shown = cli("actions", "show", "ring")
    assert shown.exit_code == 0 and '"maximum": 300' in shown.stdout
    assert cli.json("actions", "show", "locate")["result_schema"]["required"][0] == "lat"
    unknown = cli("actions", "show", "selfdestruct")
    assert unknown.exit_code == 2 and "unknown action 'selfdestruct'" in one_error_line(unknown)


def test_send_checks_the_payload_first(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "pixel-042")
    for args, message in (
        (("ring", "--payload", '{"seconds": 0}'), "ring payload at $.seconds: 0 is less than the minimum of 1"),
        (("lock", "--payload", '{"msg": "x"}'), "Additional properties are not allowed"),
        (("selfdestruct",), "unknown action"),
    ):
        refused = cli("send", *args, "--device", "pixel-042")
        assert refused.exit_code == 2, refused.stderr
        assert message in one_error_line(refused)
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(FcmDispatch)).scalar_one() == 0
    sent = cli.json("send", "lost_mode", "--device", "pixel-042", "--payload", '{"message": "Return to store 7"}')
    assert sent["action"] == "lost_mode" and sent["payload"] == {"message": "Return to store 7"}


def test_results_error_codes_and_audited_location_reads(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    add_device(session_factory, "dev_1")
    with session_factory.begin() as db:
        dispatches.create_command(db, settings, request_id="loc-1", device_id="dev_1", action="locate")
        dispatches.create_command(db, settings, request_id="apk-1", device_id="dev_1", action="install_apk",
                                  payload={"build_id": 2})  # fmt: skip
        dispatches.ack_command(db, device_id="dev_1", request_id="loc-1", status="completed", result=FIX)
        dispatches.ack_command(db, device_id="dev_1", request_id="apk-1", status="failed", error_code="DOWNLOAD_FAILED")
    assert cli.json("dispatches", "show", "loc-1")["result"] == FIX
    shown = cli("dispatches", "show", "apk-1")
    assert shown.exit_code == 0 and "DOWNLOAD_FAILED" in shown.stdout
    assert json.dumps(FIX, sort_keys=True) in cli("dispatches", "show", "loc-1").stdout

    last = cli.json("devices", "location", "dev_1")
    assert last["location"]["lat"] == 51.5074 and last["location"]["source"] == "locate" and last["lost_mode"] is None
    table = cli("devices", "location", "dev_1")
    assert table.exit_code == 0 and "51.507400, -0.127800" in table.stdout and "location.read" in table.stderr
    assert [i["request_id"] for i in cli.json("devices", "location", "dev_1", "--history")["items"]] == ["loc-1"]
    missing = cli("devices", "location", "ghost")
    assert missing.exit_code == 3 and "ghost" in one_error_line(missing)
    with session_factory() as db:
        reads = db.execute(select(AuditEvent.actor).where(AuditEvent.action == "location.read")).scalars().all()
    assert len(reads) == 3 and all(actor.startswith("cli:") for actor in reads)


def test_devices_show_gives_a_lost_devices_last_location_and_audits_it(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    add_device(session_factory, "dev_lost")
    shown = cli("devices", "show", "dev_lost")  # not lost: no location read, nothing audited
    assert shown.exit_code == 0 and "lost mode" in shown.stdout and "last known location" not in shown.stdout
    with session_factory.begin() as db:
        dispatches.create_command(db, settings, request_id="lm-1", device_id="dev_lost", action="lost_mode",
                                  payload={"message": "Return to store 7"})  # fmt: skip
        dispatches.ack_command(
            db, device_id="dev_lost", request_id="lm-1", status="completed", result={"location": FIX}
        )
    shown = cli("devices", "show", "dev_lost")
    assert shown.exit_code == 0 and "Return to store 7" in shown.stdout and "51.507400, -0.127800" in shown.stdout
    assert cli.json("devices", "show", "dev_lost")["lost_mode"]["location"]["lat"] == 51.5074
    with session_factory() as db:
        reads = db.execute(select(func.count()).where(AuditEvent.action == "location.read")).scalar_one()
    assert reads == 2  # the two reads of a lost device, not the one before
