"""``core.enrollment.enroll``: a device enrolls with a token, retries, rotates, is revoked and re-enrolls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.errors import Conflict, InvalidCredentials
from core.base.settings import Settings
from core.devices import records as devices
from core.enrollment import enroll as enrollment
from core.enrollment import tokens as credentials
from core.models import Device, EnrollmentToken
from core.storage.engine import make_engine, make_session_factory


def _token(factory: sessionmaker[Session], **kwargs: object) -> str:
    with factory.begin() as db:
        secret, _ = credentials.create_enrollment_token(db, **kwargs)
    return secret


def _enroll(factory: sessionmaker[Session], secret: str, device_id: str, **kwargs: object) -> dict:
    with factory.begin() as db:
        return enrollment.enroll_device(db, enrollment_secret=secret, device_id=device_id, **kwargs)


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
