"""A Hypothesis stateful model of commands and heartbeats, on SQLite and PostgreSQL (issue #7, item 2).

Random sequences of: dispatch a command (often reusing a key, sometimes with another body), replay one,
heartbeats from several devices (through the API at the server's time, and through the API's own core
path at chosen times, so that buckets collide and some are old enough to clean up), acknowledgements from
the right and from the wrong device, the expiry sweep, a delivery round through the fake FCM and the
retention cleanup. After every step the database must match the model exactly:

* one row per request id, holding the first accepted body, and the status the model expects;
* one heartbeat per device per bucket, exactly the buckets the model expects (after cleanups);
* no more pushes of a request id than times it was accepted (a key can be accepted again after cleanup);
* an acknowledgement from another device is 404 and changes nothing.

The app (TestClient, lifespan running) and the devices are built once per backend; between examples the
two tables are emptied, which is much cheaper than a fresh database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from litestar.testing import TestClient
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from core import db_utils
from core.access import keys as admin_keys
from core.base import security
from core.base.errors import Forbidden
from core.base.settings import Settings
from core.commands.push import DeliveryWorker, client_from_settings, sweep_expired
from core.enrollment import tokens as credentials
from core.heartbeats import store as heartbeats
from core.models import Device, DeviceHeartbeat, FcmDispatch
from core.storage.engine import make_session_factory
from core.storage.types import utcnow
from nexmdm_api import create_app
from tests.support.fakes.fcm import FakeFcm, write_service_account

DEVICES = ("dev_a", "dev_b", "dev_c")  # dev_c has no FCM token: its pushes are skipped
KEYS = tuple(f"cmd-{i}" for i in range(4))
#: an operator's own, untyped actions: any payload goes (the built-in ones are checked by
#: tests/core/test_commands_catalogue.py)
ACTIONS = ("echo", "beep")
PAYLOADS = (None, {"n": 1}, {"n": 2})
ACKS = {"completed": "acked", "failed": "failed"}
FINISHED = {"acked", "failed", "expired"}
BUCKET_SECONDS = 10

MODEL_SETTINGS = settings(
    max_examples=500,
    stateful_step_count=8,
    deadline=None,
    database=None,  # no .hypothesis folder in the shared working tree; a failure prints its steps
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass
class World:
    """What lives across examples: the running app, device tokens, the delivery worker, the fake FCM."""

    client: TestClient[Any]
    sessions: sessionmaker[Session]
    settings: Settings
    admin: dict[str, str]
    tokens: dict[str, str]
    worker: DeliveryWorker
    fcm: FakeFcm


@pytest.fixture
def world(settings: Settings, engine: Engine, fake_fcm: FakeFcm, tmp_path: Path) -> Iterator[World]:
    key_file = write_service_account(tmp_path / "sa.json", f"{fake_fcm.url}/token")
    api_settings = settings.with_overrides(
        fcm_credentials=key_file,
        fcm_endpoint=fake_fcm.url,
        delivery_in_server=False,  # pushes happen in the model's own `deliver` step, deterministically
        heartbeat_rate_per_minute=10**9,
        heartbeat_burst=10**9,
        heartbeat_bucket_seconds=BUCKET_SECONDS,
        actions=ACTIONS,
    )
    sessions = make_session_factory(engine, api_settings)
    tokens = {}
    with sessions.begin() as db:
        admin_key, _ = admin_keys.create_admin_key(db, name="model")
        enrollment, _ = credentials.create_enrollment_token(db, uses=len(DEVICES), expires_in=timedelta(hours=1))
    worker = DeliveryWorker(sessions, api_settings, client_from_settings(api_settings))
    with TestClient(create_app(api_settings)) as client:
        for device_id in DEVICES:
            body: dict[str, Any] = {"device_id": device_id}
            if device_id != "dev_c":
                body["fcm_token"] = f"fcm-{device_id}"
            enrolled = client.post("/v1/enroll", json=body, headers={"Authorization": f"Bearer {enrollment}"})
            assert enrolled.status_code == 201, enrolled.text
            tokens[device_id] = enrolled.json()["device_token"]
        yield World(client, sessions, api_settings, {"Authorization": f"Bearer {admin_key}"}, tokens, worker, fake_fcm)
    worker.close()


def test_commands_and_heartbeats_keep_their_invariants(world: World) -> None:
    w = world

    class Model(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with w.sessions.begin() as db:
                db.execute(delete(FcmDispatch))
                db.execute(delete(DeviceHeartbeat))
            w.fcm.messages.clear()
            self.base = db_utils.bucket_floor(utcnow(), BUCKET_SECONDS)
            #: request id -> what the database must hold for it
            self.dispatches: dict[str, dict[str, Any]] = {}
            #: (device id, bucket start) of every heartbeat the database must hold
            self.beats: set[tuple[str, datetime]] = set()
            self.accepted: Counter[str] = Counter()

        # ------------------------------------------------------------------------------ helpers

        def device_headers(self, device_id: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {w.tokens[device_id]}"}

        def post_command(self, key: str, device_id: str, action: str, payload: Any) -> Any:
            body: dict[str, Any] = {"action": action} | ({"payload": payload} if payload is not None else {})
            return w.client.post(
                f"/v1/devices/{device_id}/commands", json=body, headers=w.admin | {"Idempotency-Key": key}
            )

        def row(self, key: str) -> Any:
            with w.sessions() as db:
                return db.execute(select(FcmDispatch).where(FcmDispatch.request_id == key)).scalar_one_or_none()

        # -------------------------------------------------------------------------------- rules

        @initialize()
        def start(self) -> None:
            assert self.row(KEYS[0]) is None

        @rule(
            key=st.sampled_from(KEYS),
            device_id=st.sampled_from(DEVICES),
            action=st.sampled_from(ACTIONS),
            payload=st.sampled_from(PAYLOADS),
        )
        def dispatch(self, key: str, device_id: str, action: str, payload: Any) -> None:
            response = self.post_command(key, device_id, action, payload)
            known = self.dispatches.get(key)
            if known is None:
                assert response.status_code == 202, response.text
                answer = response.json()
                assert answer["status"] == "pending" and answer["replay_count"] == 0
                self.dispatches[key] = {
                    "device_id": device_id,
                    "action": action,
                    "payload": payload,
                    "status": "pending",
                    "fcm_status": "pending",
                    "created_at": when(answer["created_at"]),
                }
                self.accepted[key] += 1
            elif (known["device_id"], known["action"], known["payload"]) == (device_id, action, payload):
                assert response.status_code == 200, response.text
                assert response.headers["Idempotent-Replayed"] == "true"
            else:
                assert response.status_code == 422, response.text
                assert response.json()["code"] == "idempotency_key_reused"

        @precondition(lambda self: self.dispatches)
        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            key = data.draw(st.sampled_from(sorted(self.dispatches)), label="key")
            known = self.dispatches[key]
            response = self.post_command(key, known["device_id"], known["action"], known["payload"])
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["request_id"] == key and answer["status"] == known["status"]
            assert when(answer["created_at"]) == known["created_at"]
            assert (answer["device_id"], answer["action"], answer["payload"]) == (
                known["device_id"],
                known["action"],
                known["payload"],
            )

        @rule(device_id=st.sampled_from(DEVICES))
        def heartbeat_now(self, device_id: str) -> None:
            response = w.client.post(
                "/v1/heartbeat", json={"status": "ok", "battery_pct": 50}, headers=self.device_headers(device_id)
            )
            assert response.status_code in (200, 201), response.text
            beat = (device_id, when(response.json()["bucket_start"]))
            assert (response.status_code == 201) == (beat not in self.beats), (response.status_code, beat)
            self.beats.add(beat)

        @rule(
            device_id=st.sampled_from(DEVICES),
            days_back=st.integers(0, 2),
            bucket=st.integers(0, 2),
            claim=st.sampled_from([None, "self", "other"]),
        )
        def heartbeat_at(self, device_id: str, days_back: int, bucket: int, claim: str | None) -> None:
            """The API's heartbeat path (``core.heartbeats.store``) at a chosen receive time."""
            received = self.base - timedelta(days=days_back, hours=1 if days_back else 0)
            received += timedelta(seconds=bucket * BUCKET_SECONDS + 3)
            data: dict[str, Any] = {"status": "ok", "network_type": "wifi"}
            if claim is not None:
                data["device_id"] = device_id if claim == "self" else next(d for d in DEVICES if d != device_id)
            try:
                with w.sessions.begin() as db:
                    result = heartbeats.record_heartbeat_for_token(
                        db, token=w.tokens[device_id], heartbeat_data=data, settings=w.settings, received_at=received
                    )
            except Forbidden:
                assert claim == "other"
                return
            assert claim != "other", "a heartbeat naming another device was stored"
            beat = (device_id, db_utils.bucket_floor(received, BUCKET_SECONDS))
            assert result["device_id"] == device_id and result["bucket_start"] == beat[1]
            assert result["created"] == (beat not in self.beats)
            self.beats.add(beat)

        @rule(
            key=st.sampled_from(KEYS),
            device_id=st.sampled_from(DEVICES),
            status=st.sampled_from(sorted(ACKS)),
        )
        def ack(self, key: str, device_id: str, status: str) -> None:
            before = self.row(key)
            response = w.client.post(
                f"/v1/commands/{key}/ack", json={"status": status}, headers=self.device_headers(device_id)
            )
            known = self.dispatches.get(key)
            if known is None or known["device_id"] != device_id:
                # unknown, cleaned up, or another device's command: 404, and nothing changes
                assert response.status_code == 404, response.text
                after = self.row(key)
                if before is not None:
                    assert (after.status, after.acked_at, after.ack_detail) == (
                        before.status,
                        before.acked_at,
                        before.ack_detail,
                    )
                return
            if known["status"] == "pending":
                assert response.status_code == 200, response.text
                known["status"] = ACKS[status]
                if known["fcm_status"] == "pending":  # finished before any push: never pushed now
                    known["fcm_status"] = "skipped"
            elif known["status"] == ACKS[status]:
                assert response.status_code == 200, response.text
            else:
                assert response.status_code == 409, response.text
            assert response.status_code == 409 or response.json()["status"] == known["status"]

        @rule()
        def expire(self) -> None:
            """The expiry sweep, as if the command TTL had passed for everything pending."""
            later = utcnow() + timedelta(seconds=w.settings.command_ttl_seconds + 1)
            expected = sum(1 for d in self.dispatches.values() if d["status"] == "pending")
            assert sweep_expired(w.sessions, w.settings, now=later) == expected
            for known in self.dispatches.values():
                if known["status"] == "pending":
                    known["status"] = "expired"
                    if known["fcm_status"] == "pending":  # finished before any push: never pushed now
                        known["fcm_status"] = "skipped"

        @rule()
        def deliver(self) -> None:
            rounds = len(self.dispatches) // w.settings.delivery_batch_size + 2
            outcomes = [w.worker.run_once() for _ in range(rounds)]
            assert outcomes[-1] == [], f"still claiming after {rounds} rounds: {outcomes}"
            for known in self.dispatches.values():
                if known["status"] == "pending" and known["fcm_status"] == "pending":
                    known["fcm_status"] = "skipped" if known["device_id"] == "dev_c" else "sent"

        @rule(heartbeat_days=st.integers(0, 3), dispatch_days=st.integers(0, 1))
        def cleanup(self, heartbeat_days: int, dispatch_days: int) -> None:
            with w.sessions() as db:
                results = db_utils.run_all_retention_cleanups(
                    db, retention_days={"device_heartbeats": heartbeat_days, "fcm_dispatches": dispatch_days}
                )
            beats_cutoff = results["device_heartbeats"]["cutoff"]
            old_beats = {b for b in self.beats if b[1] < beats_cutoff}
            assert results["device_heartbeats"]["deleted"] == len(old_beats)
            self.beats -= old_beats
            cutoff = results["fcm_dispatches"]["cutoff"]
            old = {k for k, d in self.dispatches.items() if d["status"] in FINISHED and d["created_at"] < cutoff}
            assert results["fcm_dispatches"]["deleted"] == len(old)
            for key in old:
                del self.dispatches[key]

        # --------------------------------------------------------------------------- invariants

        @invariant()
        def database_matches_the_model(self) -> None:
            with w.sessions() as db:
                rows = db.execute(
                    select(
                        FcmDispatch.request_id,
                        FcmDispatch.device_id,
                        FcmDispatch.action,
                        FcmDispatch.payload,
                        FcmDispatch.status,
                        FcmDispatch.fcm_status,
                    )
                ).all()
                beats = db.execute(
                    select(DeviceHeartbeat.device_id, DeviceHeartbeat.bucket_start, func.count()).group_by(
                        DeviceHeartbeat.device_id, DeviceHeartbeat.bucket_start
                    )
                ).all()
            assert len(rows) == len({r.request_id for r in rows}), "two rows for one request id"
            assert {r.request_id: tuple(r[1:]) for r in rows} == {
                k: (d["device_id"], d["action"], d["payload"], d["status"], d["fcm_status"])
                for k, d in self.dispatches.items()
            }
            assert all(n == 1 for _, _, n in beats), "two heartbeats in one bucket"
            assert {(device_id, start) for device_id, start, _ in beats} == self.beats

        @invariant()
        def pushes_never_exceed_accepted_commands(self) -> None:
            pushes = Counter(w.fcm.sent_request_ids())
            assert all(pushes[key] <= self.accepted[key] for key in pushes), (pushes, self.accepted)
            assert sum(pushes.values()) <= sum(self.accepted.values())
            assert all(m.body["message"]["token"] != "fcm-dev_c" for m in w.fcm.messages)

    run_state_machine_as_test(Model, settings=MODEL_SETTINGS)


def test_a_rolled_back_partition_is_not_remembered(backend: str, session_factory: sessionmaker[Session]) -> None:
    """Found by the model on PostgreSQL: a heartbeat for a day without a partition creates it inside the
    caller's transaction; when that transaction rolled back (here: the heartbeat named another device), the
    day stayed in the per-engine cache of known partitions and every later heartbeat for it failed with
    "no partition of relation device_heartbeats found for row"."""
    settings_ = session_factory.kw["info"]["settings"]
    token = "nxd_regression"
    with session_factory.begin() as db:
        db.add_all([Device(id="dev_x", device_token_hash=security.hash_secret(token)), Device(id="dev_y")])
    for days in (40, 41):
        long_ago = utcnow() - timedelta(days=days)
        with pytest.raises(Forbidden), session_factory.begin() as db:
            if days == 41:  # the same day twice in one transaction, then a rollback
                db_utils.record_heartbeat_with_bucketing(db, device_id="dev_y", heartbeat_data={}, received_at=long_ago)
            heartbeats.record_heartbeat_for_token(
                db, token=token, heartbeat_data={"device_id": "dev_y"}, settings=settings_, received_at=long_ago
            )
        with session_factory.begin() as db:
            stored = heartbeats.record_heartbeat_for_token(
                db, token=token, heartbeat_data={}, settings=settings_, received_at=long_ago
            )
        assert stored["created"] is True
        with session_factory.begin() as db:  # known now: no catalog look-up needed, and still right
            again = db_utils.record_heartbeat_with_bucketing(
                db, device_id="dev_y", heartbeat_data={}, received_at=long_ago
            )
        assert again["created"] is True
