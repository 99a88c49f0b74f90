"""POST /v1/enroll: token uses, expiry, revocation, retries, rotation, conflicts and the one-use race."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select, update

from core.base.settings import Settings
from core.enrollment import tokens as credentials
from core.models import Device, EnrollmentToken
from core.storage.types import utcnow
from nexmdm_api import create_app

BEAT = {"status": "ok"}


def test_enroll_returns_a_working_device_token(client: TestClient[Any], make_token, auth) -> None:
    token = make_token(uses=1)
    response = client.post("/v1/enroll", json={"device_id": "dev_001", "model": "Pixel 8"}, headers=auth(token))
    assert response.status_code == 201
    body = response.json()
    assert body["device_id"] == "dev_001" and body["device_token"].startswith("nxd_")
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(body["device_token"])).status_code == 201


def test_exhausted_expired_revoked_and_unknown_tokens_are_401(client, make_token, auth, session_factory) -> None:
    one = make_token(uses=1)
    assert client.post("/v1/enroll", json={"device_id": "a"}, headers=auth(one)).status_code == 201
    exhausted = client.post("/v1/enroll", json={"device_id": "b"}, headers=auth(one))
    assert exhausted.status_code == 401 and "exhausted" in exhausted.json()["detail"]

    expired = make_token(uses=5, expires_in=timedelta(seconds=1))
    with session_factory.begin() as db:
        db.execute(EnrollmentToken.__table__.update().values(expires_at=utcnow() - timedelta(days=1)))
    response = client.post("/v1/enroll", json={"device_id": "c"}, headers=auth(expired))
    assert response.status_code == 401 and "expired" in response.json()["detail"]

    revoked = make_token(uses=5)
    with session_factory.begin() as db:
        token_id = db.execute(select(EnrollmentToken.id).where(EnrollmentToken.revoked_at.is_(None))).scalars().all()
        for tid in token_id:
            credentials.revoke_enrollment_token(db, tid)
    response = client.post("/v1/enroll", json={"device_id": "d"}, headers=auth(revoked))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]

    unknown = client.post("/v1/enroll", json={"device_id": "e"}, headers=auth("nxe_" + "A" * 43))
    assert unknown.status_code == 401
    assert "nxe_" not in unknown.text
    assert client.post("/v1/enroll", json={"device_id": "e"}).status_code == 401


def test_retry_within_window_takes_no_use_and_rotates(client, make_token, auth, session_factory) -> None:
    token = make_token(uses=1)
    answer = client.post("/v1/enroll", json={"device_id": "dev_001"}, headers=auth(token)).json()
    first, lost_secret = answer["device_token"], answer["enrollment_secret"]
    retry = client.post(
        "/v1/enroll", json={"device_id": "dev_001", "enrollment_secret": lost_secret}, headers=auth(token)
    )
    assert retry.status_code == 201
    second = retry.json()["device_token"]
    assert second != first and retry.json()["enrollment_secret"] != lost_secret
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(first)).status_code == 401
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(second)).status_code == 201
    with session_factory() as db:
        assert db.execute(select(EnrollmentToken.uses)).scalar_one() == 1


def test_a_retry_needs_the_lost_answers_one_time_secret(client, make_token, auth, session_factory) -> None:
    """Issue #11 item 4: another holder of the shared token cannot take the device over in the window."""
    shared = make_token(uses=10)
    answer = client.post("/v1/enroll", json={"device_id": "victim-1"}, headers=auth(shared)).json()
    secret = answer["enrollment_secret"]
    assert secret.startswith("nxr_") and len(secret) >= 4 + 43
    for body in ({}, {"enrollment_secret": "nxr_" + "A" * 43}, {"enrollment_secret": answer["device_token"]}):
        takeover = client.post("/v1/enroll", json={"device_id": "victim-1", **body}, headers=auth(shared))
        assert takeover.status_code == 409, takeover.text
        assert takeover.json()["code"] == "conflict"
    # the real device, whose answer was lost, still gets in; its secret then works only once
    retry = client.post("/v1/enroll", json={"device_id": "victim-1", "enrollment_secret": secret}, headers=auth(shared))
    assert retry.status_code == 201
    again = client.post("/v1/enroll", json={"device_id": "victim-1", "enrollment_secret": secret}, headers=auth(shared))
    assert again.status_code == 409
    with session_factory() as db:
        device = db.get(Device, "victim-1")
        stored = device.enrollment_secret_hash
        assert stored is not None and len(stored) == 64 and retry.json()["enrollment_secret"] not in stored
        assert db.execute(select(EnrollmentToken.uses)).scalar_one() == 1
    # after the first heartbeat no retry works, secret or not
    newest = retry.json()
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(newest["device_token"])).status_code == 201
    late = client.post(
        "/v1/enroll",
        json={"device_id": "victim-1", "enrollment_secret": newest["enrollment_secret"]},
        headers=auth(shared),
    )
    assert late.status_code == 409


def test_a_retry_with_an_expired_token_never_enrolls(client, make_token, auth, session_factory) -> None:
    token = make_token(uses=5)
    answer = client.post("/v1/enroll", json={"device_id": "dev_exp"}, headers=auth(token)).json()
    with session_factory.begin() as db:
        db.execute(update(EnrollmentToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    retry = client.post(
        "/v1/enroll",
        json={"device_id": "dev_exp", "enrollment_secret": answer["enrollment_secret"]},
        headers=auth(token),
    )
    assert retry.status_code == 409, retry.text  # like any enrolled device: the retry window is closed
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(answer["device_token"])).status_code == 201


def test_enrolled_device_is_409_unless_it_sends_its_token(client, make_token, auth) -> None:
    first_token, other_token = make_token(uses=5), make_token(uses=5)
    current = client.post("/v1/enroll", json={"device_id": "dev_001"}, headers=auth(first_token)).json()["device_token"]
    conflict = client.post("/v1/enroll", json={"device_id": "dev_001"}, headers=auth(other_token))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    rotated = client.post(
        "/v1/enroll", json={"device_id": "dev_001", "current_device_token": current}, headers=auth(other_token)
    )
    assert rotated.status_code == 201
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(current)).status_code == 401
    assert client.post("/v1/heartbeat", json=BEAT, headers=auth(rotated.json()["device_token"])).status_code == 201


def test_invalid_bodies(client, make_token, auth) -> None:
    headers = auth(make_token())
    for body in ({"device_id": "bad id!"}, {"device_id": ""}, {"device_id": "x" * 129}, {}, {"device_id": 5}):
        response = client.post("/v1/enroll", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
    assert client.post("/v1/enroll", json={"device_id": "ok", "extra": 1}, headers=headers).status_code == 201


@pytest.mark.slow
def test_twenty_parallel_enrollments_with_a_one_use_token_make_one_device(
    api_settings: Settings, engine, make_token, session_factory
) -> None:
    """Each thread runs its own app (its own engine and pool), like separate server workers."""
    token = make_token(uses=1)
    barrier = threading.Barrier(20, timeout=30)
    codes: list[int] = []
    lock = threading.Lock()

    apps = [create_app(api_settings) for _ in range(20)]  # built here: Litestar's lazy imports are not thread-safe

    def enroll(index: int) -> None:
        with TestClient(apps[index]) as client:
            barrier.wait()
            code = client.post(
                "/v1/enroll", json={"device_id": f"race_{index:02d}"}, headers={"Authorization": f"Bearer {token}"}
            ).status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(codes).count(201) == 1, codes
    assert all(code in (201, 401) for code in codes), codes
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(Device)).scalar_one() == 1
        assert db.execute(select(EnrollmentToken.uses)).scalar_one() == 1
