"""Core services used by the CLI and the API: credentials, enrollment, commands, APKs, locks."""

from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.apk import builds as apk
from core.apk import storage as apk_storage
from core.base import security
from core.base.durations import format_duration, parse_duration
from core.base.errors import Conflict, InvalidArgument, InvalidCredentials, NotFound
from core.base.settings import Settings
from core.commands import dispatches
from core.devices import records as devices
from core.enrollment import enroll as enrollment
from core.enrollment import tokens as credentials
from core.models import AdminKey, Device, EnrollmentToken, FcmDispatch
from core.ops.locks import maintenance_lock
from core.storage.engine import make_engine, make_session_factory
from tests.support.fakes.apk import apk_bytes


def _token(factory: sessionmaker[Session], **kwargs: object) -> str:
    with factory.begin() as db:
        secret, _ = credentials.create_enrollment_token(db, **kwargs)
    return secret


def _enroll(factory: sessionmaker[Session], secret: str, device_id: str, **kwargs: object) -> dict:
    with factory.begin() as db:
        return enrollment.enroll_device(db, enrollment_secret=secret, device_id=device_id, **kwargs)


# ----------------------------------------------------------------------------------- credentials


def test_secrets_are_long_random_and_stored_as_hashes(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as db:
        secret, token = credentials.create_enrollment_token(db)
        key_secret, key = admin_keys.create_admin_key(db, name="ops")
    assert secret.startswith("nxe_") and len(secret) >= 4 + 43
    assert key_secret.startswith("nxa_") and key_secret != secret
    with session_factory() as db:
        stored = db.get(EnrollmentToken, token["id"])
        assert stored.token_hash == security.hash_secret(secret)
        assert secret not in repr(credentials.list_enrollment_tokens(db))
        assert db.execute(select(AdminKey.key_hash)).scalar_one() == security.hash_secret(key_secret)
        assert admin_keys.authenticate_admin(db, key_secret)["name"] == "ops"
        with pytest.raises(InvalidCredentials):
            admin_keys.authenticate_admin(db, key_secret + "x")


def test_revoked_admin_key_is_refused_and_names_are_unique(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="ci")
        admin_keys.revoke_admin_key(db, "ci")
    with session_factory() as db:
        with pytest.raises(InvalidCredentials):
            admin_keys.authenticate_admin(db, secret)
        with pytest.raises(Conflict):
            admin_keys.create_admin_key(db, name="ci")
        with pytest.raises(NotFound):
            admin_keys.revoke_admin_key(db, "nobody")


@pytest.mark.parametrize("kwargs", [{"uses": 0}, {"uses": True}, {"expires_in": timedelta(0)}])
def test_bad_token_options(db: Session, kwargs: dict) -> None:
    with pytest.raises(InvalidArgument):
        credentials.create_enrollment_token(db, **kwargs)


# ------------------------------------------------------------------------------------ enrollment


def test_enrollment_issues_a_device_token(session_factory: sessionmaker[Session]) -> None:
    secret = _token(session_factory)
    result = _enroll(session_factory, secret, "dev_1", fcm_token="fcm-abc", model="Pixel 8")
    assert result["created"] is True and result["device_token"].startswith("nxd_")
    with session_factory() as db:
        device = devices.authenticate_device(db, result["device_token"])
        assert (device.id, device.model, device.fcm_token) == ("dev_1", "Pixel 8", "fcm-abc")
        assert db.execute(select(EnrollmentToken.uses)).scalar_one() == 1


def test_retry_within_ten_minutes_uses_no_second_use(session_factory: sessionmaker[Session]) -> None:
    secret = _token(session_factory, uses=1)
    first = _enroll(session_factory, secret, "dev_1")
    with pytest.raises(Conflict):  # a retry must present the lost answer's one-time secret
        _enroll(session_factory, secret, "dev_1")
    again = _enroll(session_factory, secret, "dev_1", retry_secret=first["enrollment_secret"])
    assert again["device_token"] != first["device_token"]
    with session_factory() as db:
        assert db.execute(select(EnrollmentToken.uses)).scalar_one() == 1
        with pytest.raises(InvalidCredentials):
            devices.authenticate_device(db, first["device_token"])
        assert devices.authenticate_device(db, again["device_token"]).id == "dev_1"
    # after the window the same request is a conflict: an operator must revoke first
    with session_factory.begin() as db:
        db.execute(update(Device).values(enrolled_at=datetime.now(UTC) - timedelta(minutes=11)))
    with pytest.raises(Conflict):
        _enroll(session_factory, secret, "dev_1", retry_secret=again["enrollment_secret"])


def test_enrolled_device_rotates_only_with_its_current_token(session_factory: sessionmaker[Session]) -> None:
    secret = _token(session_factory, uses=5)
    other = _token(session_factory, uses=5)
    first = _enroll(session_factory, secret, "dev_1")
    with pytest.raises(Conflict):
        _enroll(session_factory, other, "dev_1")
    with pytest.raises(Conflict):
        _enroll(session_factory, other, "dev_1", current_device_token="nxd_wrong")
    rotated = _enroll(session_factory, other, "dev_1", current_device_token=first["device_token"])
    with session_factory() as db:
        with pytest.raises(InvalidCredentials):
            devices.authenticate_device(db, first["device_token"])
        assert devices.authenticate_device(db, rotated["device_token"]).id == "dev_1"


def test_revoked_device_token_stops_working_and_device_can_reenroll(session_factory: sessionmaker[Session]) -> None:
    secret = _token(session_factory, uses=2)
    first = _enroll(session_factory, secret, "dev_1")
    with session_factory.begin() as db:
        enrollment.revoke_device(db, "dev_1")
    with session_factory() as db, pytest.raises(InvalidCredentials):
        devices.authenticate_device(db, first["device_token"])
    again = _enroll(session_factory, secret, "dev_1")
    with session_factory() as db:
        assert devices.authenticate_device(db, again["device_token"]).revoked_at is None


@pytest.mark.parametrize("state", ["expired", "revoked", "exhausted"])
def test_unusable_tokens_are_refused(session_factory: sessionmaker[Session], state: str) -> None:
    secret = _token(session_factory, uses=1)
    with session_factory.begin() as db:
        values = {
            "expired": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)},
            "revoked": {"revoked_at": datetime.now(UTC)},
            "exhausted": {"uses": 1},
        }[state]
        db.execute(update(EnrollmentToken).values(**values))
    with pytest.raises(InvalidCredentials, match=state):
        _enroll(session_factory, secret, "dev_1")
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(Device)).scalar_one() == 0


def test_20_parallel_enrollments_with_a_one_use_token(settings: Settings, engine) -> None:
    wide = make_engine(settings.database_url, pool_size=20)
    factory = make_session_factory(wide, settings)
    secret = _token(factory, uses=1)
    barrier = threading.Barrier(20)

    def attempt(i: int) -> str:
        barrier.wait()
        try:
            _enroll(factory, secret, f"dev_{i:02d}")
            return "ok"
        except InvalidCredentials:
            return "refused"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    with factory() as db:
        assert db.execute(select(func.count()).select_from(Device)).scalar_one() == 1
        assert db.execute(select(EnrollmentToken.uses)).scalar_one() == 1
    wide.dispose()
    assert outcomes.count("ok") == 1 and outcomes.count("refused") == 19


# -------------------------------------------------------------------------------------- commands


def _device(factory: sessionmaker[Session], device_id: str = "dev_1") -> None:
    with factory.begin() as db:
        db.add(Device(id=device_id))


def test_command_idempotency_and_mismatch(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    _device(session_factory, "dev_2")
    with session_factory.begin() as db:
        created, first = dispatches.create_command(
            db,
            settings,
            request_id="k1",
            device_id="dev_1",
            action="lost_mode",
            payload={"phone": "+1555", "message": "m"},
        )
        replay_created, replay = dispatches.create_command(
            db,
            settings,
            request_id="k1",
            device_id="dev_1",
            action="lost_mode",
            payload={"message": "m", "phone": "+1555"},
        )
    assert created and not replay_created and replay["request_id"] == first["request_id"]
    for change in (
        {"device_id": "dev_2"},
        {"action": "lock", "payload": {"message": "m"}},
        {"payload": {"message": "n"}},
    ):
        args = {
            "request_id": "k1",
            "device_id": "dev_1",
            "action": "lost_mode",
            "payload": {"message": "m", "phone": "+1555"},
        }
        args |= change
        with session_factory() as db, pytest.raises(dispatches.IdempotencyMismatch):
            dispatches.create_command(db, settings, **args)
    with session_factory() as db, pytest.raises(InvalidArgument, match="unknown action"):
        dispatches.create_command(db, settings, request_id="k2", device_id="dev_1", action="selfdestruct")
    with session_factory() as db, pytest.raises(NotFound):
        dispatches.create_command(db, settings, request_id="k3", device_id="ghost", action="ping")


def test_ack_rules(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    _device(session_factory, "dev_2")
    with session_factory.begin() as db:
        dispatches.create_command(db, settings, request_id="k1", device_id="dev_1", action="ping")
        assert [d["request_id"] for d in dispatches.pending_commands(db, "dev_1")] == ["k1"]
    with session_factory.begin() as db, pytest.raises(NotFound):
        dispatches.ack_command(db, device_id="dev_2", request_id="k1", status="completed")
    with session_factory.begin() as db:
        changed, acked = dispatches.ack_command(db, device_id="dev_1", request_id="k1", status="completed")
        assert changed and acked["status"] == "acked"
    with session_factory.begin() as db:
        changed, again = dispatches.ack_command(db, device_id="dev_1", request_id="k1", status="completed")
        assert not changed and again["acked_at"] == acked["acked_at"]
        with pytest.raises(Conflict):
            dispatches.ack_command(db, device_id="dev_1", request_id="k1", status="failed")
        assert dispatches.pending_commands(db, "dev_1") == []
        assert [h["status"] for h in dispatches.get_dispatch(db, "k1")["history"]] == ["pending", "acked"]


def test_stats_count_replays_durably(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    for _ in range(3):
        with session_factory.begin() as db:
            dispatches.create_command(db, settings, request_id="k1", device_id="dev_1", action="ping")
    with session_factory.begin() as db:
        _, k2 = dispatches.create_command(db, settings, request_id="k2", device_id="dev_1", action="sync")
        db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.request_id == "k2")
            .values(sent_at=k2["created_at"] + timedelta(milliseconds=250), fcm_status="sent")
        )
    with session_factory() as db:
        stats = dispatches.dispatch_stats(db)
    assert stats["total"] == 2 and stats["replays"] == 2 and stats["requests"] == 4
    assert stats["idempotency_hit_rate"] == pytest.approx(0.5)
    assert stats["by_action"] == {"ping": 1, "sync": 1}
    assert stats["push_latency_ms"]["count"] == 1
    assert stats["push_latency_ms"]["p50"] == pytest.approx(250, abs=1)


# ------------------------------------------------------------------------------------- APK, misc


def test_apk_builds_are_copied_and_fingerprinted(session_factory: sessionmaker[Session], settings: Settings) -> None:
    data = apk_bytes(b"x" * 5000)
    with session_factory.begin() as db:
        build = apk.add_build(db, settings, source=io.BytesIO(data), version_code=3, version_name="1.3")
    with session_factory() as db:  # the folder's file (SQLite) or the node's cache filled from the database
        path = apk_storage.local_file(db, settings, apk.get_build(db, build["id"]))
    assert path.read_bytes() == data and build["size_bytes"] == len(data)
    with session_factory() as db:
        with pytest.raises(Conflict):
            apk.add_build(db, settings, source=io.BytesIO(data), version_code=3, version_name="again")
        with pytest.raises(InvalidArgument, match="not an APK"):
            apk.add_build(db, settings, source=io.BytesIO(b"hello"), version_code=4, version_name="x")
        for fake in (b"P", b"PK\x03\x04" + b"x" * 5000, apk_bytes(manifest=False)):  # magic alone is no APK
            with pytest.raises(InvalidArgument, match="not an APK"):
                apk.add_build(db, settings, source=io.BytesIO(fake), version_code=5, version_name="x")
        assert apk.get_build(db).version_code == 3
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no half-written upload left behind


def test_maintenance_lock_is_exclusive(engine) -> None:
    with maintenance_lock(engine) as first:
        assert first and not first.lost()
        other = make_engine(str(engine.url.render_as_string(hide_password=False)))
        with maintenance_lock(other) as second:
            assert not second
        other.dispose()
    with maintenance_lock(engine) as again:
        assert again


@pytest.mark.parametrize("backend", ["postgresql"])  # a flock beside the SQLite file is never lost
def test_a_cleanup_that_loses_its_lease_stops_at_the_next_batch(
    engine, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stalled holder whose lease passed to another node must not go on deleting beside it."""
    from core.base.errors import LockLost
    from core.models.lease import Lease
    from core.ops import locks, retention

    monkeypatch.setattr(locks, "LEASE_SECONDS", 3.0)  # renewed every second: the loss is seen within one
    factory = make_session_factory(engine, settings.with_overrides(cleanup_batch_size=10))
    old = datetime.now(UTC) - timedelta(days=400)
    with factory.begin() as db:
        db.add(Device(id="dev_old"))
        db.flush()
        for i in range(50):
            db.add(
                FcmDispatch(
                    request_id=f"old-{i}", device_id="dev_old", action="ping", payload_hash="0" * 64,
                    status="acked", created_at=old, finished_at=old,
                )
            )  # fmt: skip
    batches: list[str] = []

    class TakeTheLeaseAway(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if not message.startswith("cleanup_batch"):
                return
            batches.append(message)
            if "entity=fcm_dispatches" in message and "lease taken away" not in batches:
                with factory.begin() as db:  # its lease ran out during a pause and another node took it
                    db.execute(
                        update(Lease)
                        .where(Lease.name == "maintenance:cleanup")
                        .values(holder="other-node", expires_at=datetime.now(UTC) + timedelta(hours=1))
                    )
                deadline = time.monotonic() + 5  # the holder's next renewal (every second) finds it gone
                while not held.lost() and time.monotonic() < deadline:
                    time.sleep(0.05)
                batches.append("lease taken away")

    caplog.set_level(logging.INFO, logger="nexmdm.cleanup")
    handler = TakeTheLeaseAway()
    logging.getLogger("nexmdm.cleanup").addHandler(handler)
    try:
        with maintenance_lock(engine) as held, factory() as db, pytest.raises(LockLost):
            retention.run_all_retention_cleanups(db, lock_lost=held.lost)
    finally:
        logging.getLogger("nexmdm.cleanup").removeHandler(handler)
    assert batches[-1] == "lease taken away"  # no batch after it
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 40  # one batch of 10 went


@pytest.mark.parametrize(("text", "expected"), [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800)])
def test_durations(text: str, expected: int) -> None:
    assert parse_duration(text).total_seconds() == expected


@pytest.mark.parametrize("text", ["", "3x", "h", "-1h", "0m", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (5, 125, 3700, 90000)] == ["5s", "2m", "1h 1m", "1d 1h"]


def test_payload_strings_with_nul_or_control_characters_are_refused(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _device(session_factory)
    for payload in ({"msg": "a\x00b"}, {"k\x07": 1}, {"list": ["ok", "\u202e"]}):
        with session_factory() as db, pytest.raises(InvalidArgument, match="control"):
            dispatches.create_command(db, settings, request_id="nul", device_id="dev_1", action="ring", payload=payload)


def test_pending_is_not_a_request_id(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _device(session_factory)
    with session_factory() as db, pytest.raises(InvalidArgument, match="reserved"):
        dispatches.create_command(db, settings, request_id="pending", device_id="dev_1", action="ring")
