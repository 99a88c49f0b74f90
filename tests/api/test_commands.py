"""Commands: idempotent dispatch by admins, pending and ack by devices, cross-device refusal."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from sqlalchemy import func, select

from core.models import FcmDispatch


def dispatch(client: TestClient[Any], admin: dict[str, str], device_id: str, key: str | None, body: Any) -> Any:
    headers = dict(admin)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(f"/v1/devices/{device_id}/commands", json=body, headers=headers)


def test_idempotent_dispatch(client, admin, enroll, session_factory) -> None:
    enroll("dev_001")
    enroll("dev_002")
    first = dispatch(client, admin, "dev_001", "cmd-1", {"action": "ring", "payload": {"seconds": 5}})
    assert first.status_code == 202
    assert first.json()["status"] == "pending" and first.json()["request_id"] == "cmd-1"
    assert "idempotent-replayed" not in first.headers
    replay = dispatch(client, admin, "dev_001", "cmd-1", {"payload": {"seconds": 5}, "action": "ring"})
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["created_at"] == first.json()["created_at"]
    for device, body in (
        ("dev_001", {"action": "ring", "payload": {"seconds": 6}}),
        ("dev_001", {"action": "ping"}),
        ("dev_002", {"action": "ring", "payload": {"seconds": 5}}),
    ):
        mismatch = dispatch(client, admin, device, "cmd-1", body)
        assert mismatch.status_code == 422, mismatch.text
        assert mismatch.json()["code"] == "idempotency_key_reused"
    quoted = dispatch(client, admin, "dev_001", '"cmd-1"', {"action": "ring", "payload": {"seconds": 5}})
    assert quoted.status_code == 200
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(FcmDispatch)).scalar_one() == 1
        assert db.execute(select(FcmDispatch.replay_count)).scalar_one() == 2


def test_dispatch_errors(client, admin, enroll, auth) -> None:
    device_token = enroll("dev_001")
    assert dispatch(client, admin, "dev_001", None, {"action": "ping"}).status_code == 400
    assert dispatch(client, admin, "dev_001", "", {"action": "ping"}).status_code == 400
    assert dispatch(client, admin, "dev_001", "bad key/with space", {"action": "ping"}).status_code == 400
    assert dispatch(client, admin, "dev_001", "k" * 256, {"action": "ping"}).status_code == 400
    assert dispatch(client, admin, "nobody", "k1", {"action": "ping"}).status_code == 404
    assert dispatch(client, admin, "dev_001", "k2", {"action": "selfdestruct"}).status_code == 422
    assert dispatch(client, admin, "dev_001", "k3", {"action": "ping", "extra": True}).status_code == 422
    assert dispatch(client, admin, "dev_001", "k4", {"action": "ping", "payload": [1]}).status_code == 422
    big = {"action": "ping", "payload": {"blob": "x" * 5000}}
    assert dispatch(client, admin, "dev_001", "k5", big).status_code == 422
    assert dispatch(client, admin, "bad id!", "k6", {"action": "ping"}).status_code == 422
    assert dispatch(client, auth(device_token), "dev_001", "k7", {"action": "ping"}).status_code == 401
    assert dispatch(client, {}, "dev_001", "k8", {"action": "ping"}).status_code == 401


def test_pending_and_ack(client, admin, enroll, auth) -> None:
    mine, other = enroll("dev_001"), enroll("dev_002")
    dispatch(client, admin, "dev_001", "cmd-a", {"action": "sync"})
    dispatch(client, admin, "dev_002", "cmd-b", {"action": "lock"})
    pending = client.get("/v1/commands/pending", headers=auth(mine))
    assert pending.status_code == 200
    assert [c["request_id"] for c in pending.json()["items"]] == ["cmd-a"]

    assert client.post("/v1/commands/cmd-b/ack", json={"status": "completed"}, headers=auth(mine)).status_code == 404
    assert client.post("/v1/commands/nope/ack", json={"status": "completed"}, headers=auth(mine)).status_code == 404
    bad_status = client.post("/v1/commands/cmd-a/ack", json={"status": "done"}, headers=auth(mine))
    assert bad_status.status_code == 422
    ack = client.post("/v1/commands/cmd-a/ack", json={"status": "completed", "detail": "ok"}, headers=auth(mine))
    assert ack.status_code == 200 and ack.json()["status"] == "acked"
    again = client.post("/v1/commands/cmd-a/ack", json={"status": "completed"}, headers=auth(mine))
    assert again.status_code == 200
    conflict = client.post("/v1/commands/cmd-a/ack", json={"status": "failed"}, headers=auth(mine))
    assert conflict.status_code == 409
    assert client.get("/v1/commands/pending", headers=auth(mine)).json()["items"] == []
    assert [c["request_id"] for c in client.get("/v1/commands/pending", headers=auth(other)).json()["items"]] == [
        "cmd-b"
    ]

    shown = client.get("/v1/commands/cmd-a", headers=admin)
    assert shown.status_code == 200
    assert [step["status"] for step in shown.json()["history"]] == ["pending", "acked"]
    assert client.get("/v1/commands/missing", headers=admin).status_code == 404
    assert client.get("/v1/commands/bad%20id", headers=admin).status_code == 400
    assert client.get("/v1/commands/cmd-a", headers=auth(mine)).status_code == 401
    assert client.get("/v1/commands/pending", headers=admin).status_code == 401


def test_pending_refuses_an_undeclared_query_parameter(client, enroll, auth) -> None:
    """Its parameter list is closed, as the OpenAPI document says (Schemathesis found a 200 with `?x=1`)."""
    token = enroll("dev_q")
    assert client.get("/v1/commands/pending", params={"limit": 5}, headers=auth(token)).status_code == 200
    refused = client.get("/v1/commands/pending", params={"limt": 5}, headers=auth(token))
    assert refused.status_code == 422 and "limt" in refused.json()["detail"]
