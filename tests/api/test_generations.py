"""Revocation and enrollment generations (issue #11 item 3), on SQLite and PostgreSQL.

A revoked device id that enrolls again is a new generation: it sees no command, ack or push addressed to
the old one, and revocation cancels the old one's pending commands in the same transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core import db_utils
from core.base.errors import Conflict, NotFound
from core.base.settings import Settings
from core.commands import dispatches
from core.commands.push import DeliveryWorker, client_from_settings
from core.devices import records as devices
from core.enrollment import enroll as enrollment
from core.models import Device, FcmDispatch
from core.storage.types import utcnow
from tests.support.fakes.fcm import FakeFcm, write_service_account

SECRET_PAYLOAD = {"message": "corp-secret"}  # shown on the lock screen of the old generation only


def _send(client: Any, admin: dict[str, str], key: str, device_id: str = "lost-phone", payload: Any = None) -> Any:
    body = {"action": "sync"} if payload is None else {"action": "lock", "payload": payload}
    response = client.post(f"/v1/devices/{device_id}/commands", json=body, headers=admin | {"Idempotency-Key": key})
    assert response.status_code == 202, response.text
    return response.json()


def _enroll(client: Any, token: str, device_id: str = "lost-phone", **fields: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/enroll", json={"device_id": device_id, **fields}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.text
    return response.json()


def _revoke(session_factory: sessionmaker[Session], device_id: str = "lost-phone") -> None:
    """What ``nexmdm devices revoke ID --yes`` does: one core call in one transaction."""
    with session_factory.begin() as db:
        enrollment.revoke_device(db, device_id)


def test_a_reenrolled_id_sees_nothing_of_the_revoked_one(client, admin, make_token, auth, session_factory) -> None:
    """The issue's reproduction: the secret payload must not reach whoever enrolls the id next."""
    first = _enroll(client, make_token(), fcm_token="fcm-old-phone")
    _send(client, admin, "cmd-psk", payload=SECRET_PAYLOAD)
    _revoke(session_factory)

    cancelled = client.get("/v1/commands/cmd-psk", headers=admin).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert cancelled["fcm_status"] == "skipped"  # never pushed, and never will be
    assert [step["status"] for step in cancelled["history"]] == ["pending", "cancelled"]

    second = _enroll(client, make_token())  # any usable token
    token = auth(second["device_token"])
    pending = client.get("/v1/commands/pending", headers=token)
    assert pending.status_code == 200 and pending.json()["items"] == []
    assert "corp-secret" not in pending.text
    ack = client.post("/v1/commands/cmd-psk/ack", json={"status": "completed"}, headers=token)
    assert ack.status_code == 404, ack.text
    assert client.get("/v1/commands/cmd-psk", headers=admin).json()["status"] == "cancelled"
    # the old generation's token and FCM token are gone; the device shows its generation
    assert client.post("/v1/heartbeat", json={}, headers=auth(first["device_token"])).status_code == 401
    shown = client.get("/v1/devices/lost-phone", headers=admin).json()
    assert shown["generation"] == 2 and shown["has_fcm_token"] is False and shown["state"] != "revoked"

    # a command made for the new generation is its own
    _send(client, admin, "cmd-new")
    listed = client.get("/v1/commands/pending", headers=token).text
    assert "cmd-new" in listed and "cmd-psk" not in listed
    assert client.post("/v1/commands/cmd-new/ack", json={"status": "completed"}, headers=token).status_code == 200
    with session_factory() as db:
        rows = dict(db.execute(select(FcmDispatch.request_id, FcmDispatch.generation)).all())
    assert rows == {"cmd-psk": 1, "cmd-new": 2}


def test_revocation_cancels_pending_commands_only(client, admin, enroll, auth, session_factory, settings) -> None:
    token = auth(enroll("lost-phone"))
    _send(client, admin, "done")
    assert client.post("/v1/commands/done/ack", json={"status": "completed"}, headers=token).status_code == 200
    _send(client, admin, "waiting-1")
    _send(client, admin, "waiting-2")
    _send(client, admin, "other", device_id=_other(enroll))
    _revoke(session_factory)
    with session_factory() as db:
        statuses = dict(db.execute(select(FcmDispatch.request_id, FcmDispatch.status)).all())
        assert statuses == {"done": "acked", "waiting-1": "cancelled", "waiting-2": "cancelled", "other": "pending"}
        # a late ack of a cancelled command is a conflict, like one for an expired command
        with pytest.raises(Conflict, match="cancelled"):
            dispatches.ack_command(db, device_id="lost-phone", request_id="waiting-1", status="completed")
    # revoking again changes nothing more; cleanup treats cancelled commands as finished
    _revoke(session_factory)
    with session_factory.begin() as db:
        db.execute(update(FcmDispatch).values(created_at=utcnow().replace(year=2000)))
        result = db_utils.cleanup_old_fcm_dispatches(db, retention_days=1)
    assert result["deleted"] == 3  # acked, cancelled, cancelled; the other device's pending one stays


def _other(enroll: Any) -> str:
    enroll("other-phone")
    return "other-phone"


def test_old_generation_commands_are_never_pushed_or_listed(
    client, admin, make_token, session_factory, settings: Settings, fake_fcm: FakeFcm, tmp_path: Path
) -> None:
    """Even a pending row left from the old generation (a revocation racing a command) is invisible."""
    _enroll(client, make_token(), fcm_token="fcm-old")
    _send(client, admin, "old-cmd", payload=SECRET_PAYLOAD)
    _revoke(session_factory)
    new = _enroll(client, make_token(), fcm_token="fcm-new")
    with session_factory.begin() as db:  # the race: the old command still pending
        db.execute(update(FcmDispatch).where(FcmDispatch.request_id == "old-cmd").values(status="pending"))
    key = write_service_account(tmp_path / "sa.json", f"{fake_fcm.url}/token")
    fcm_settings = settings.with_overrides(fcm_credentials=key, fcm_endpoint=fake_fcm.url)
    worker = DeliveryWorker(session_factory, fcm_settings, client_from_settings(fcm_settings), rng=lambda: 0.5)
    try:
        assert worker.run_once() == []
        _send(client, admin, "new-cmd")
        assert worker.run_once() == ["sent"]
    finally:
        worker.close()
    assert [m.body["message"]["data"]["request_id"] for m in fake_fcm.messages] == ["new-cmd"]
    assert fake_fcm.messages[0].body["message"]["token"] == "fcm-new"
    with session_factory() as db:
        assert [c["request_id"] for c in dispatches.pending_commands(db, "lost-phone")] == ["new-cmd"]
        assert devices.device_activity(db, "lost-phone")["pending_commands"] == 1
        with pytest.raises(NotFound):
            dispatches.ack_command(db, device_id="lost-phone", request_id="old-cmd", status="completed")
        assert db.get(Device, "lost-phone").generation == 2
    assert new["device_token"]


def test_each_reenrollment_of_a_revoked_id_is_the_next_generation(client, make_token, session_factory) -> None:
    token = make_token(uses=10)
    _enroll(client, token, device_id="cycler")
    for expected in (2, 3):
        _revoke(session_factory, "cycler")
        _enroll(client, token, device_id="cycler")
        with session_factory() as db:
            assert db.get(Device, "cycler").generation == expected
