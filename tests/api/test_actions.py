"""Typed actions over HTTP: the catalogue, payloads refused with their JSON path and nothing written, an
action's own least role, typed acks, the device's lost-mode reports and audited location reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.commands.action_schemas import BUILTIN
from core.models import AuditEvent, FcmDispatch
from tests.support.api import bearer

FIX = {"lat": 40.4168, "lon": -3.7038, "accuracy_m": 20, "fixed_at": "2026-01-02T10:00:00Z"}


def _command(client: TestClient[Any], admin: dict[str, str], key: str, body: dict[str, Any]) -> Any:
    return client.post("/v1/devices/dev_001/commands", json=body, headers=admin | {"Idempotency-Key": key})


def _key(factory: sessionmaker[Session], role: str) -> dict[str, str]:
    with factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name=f"k-{role}", role=role)
    return bearer(secret)


def test_the_catalogue(client: TestClient[Any], admin: dict[str, str]) -> None:
    listed = client.get("/v1/actions", headers=admin)
    assert listed.status_code == 200
    items = {a["name"]: a for a in listed.json()["items"]}
    assert list(items) == list(BUILTIN) and listed.json()["next_cursor"] is None
    assert items["wipe"]["destructive"] and items["wipe"]["least_role"] == "admin"
    assert items["ring"]["payload_schema"]["required"] == ["seconds"]
    assert items["ring"]["payload_schema"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    one = client.get("/v1/actions/locate", headers=admin).json()
    assert set(one["result_schema"]["required"]) == {"lat", "lon", "accuracy_m", "fixed_at"}
    assert client.get("/v1/actions/selfdestruct", headers=admin).status_code == 404
    document = client.get("/schema/openapi.json").json()["components"]["schemas"]
    for body, field, kind in (
        ("CommandIn", "payload", "payload"),
        ("CampaignBySelector", "payload", "payload"),
        ("CampaignByDeviceIds", "payload", "payload"),
        ("AckIn", "result", "result"),
    ):
        # one of the actions' schemas (or null), beside msgspec's own rule for a payload's values
        schema = document[body]["properties"][field]
        variants = (schema.get("anyOf") or schema.get("oneOf"))[0]["anyOf"]
        assert [v["title"] for v in variants] == [f"{name} {kind}" for name in BUILTIN], body
    assert document["AckIn"]["properties"]["error_code"]["enum"][0] == "UNSUPPORTED"


def test_a_bad_payload_is_422_with_its_path_and_writes_nothing(
    client: TestClient[Any], admin: dict[str, str], enroll: Callable[..., str], session_factory: sessionmaker[Session]
) -> None:
    enroll("dev_001")
    for key, body, field, code in (
        ("k1", {"action": "ring", "payload": {"seconds": 0}}, "payload.seconds", "invalid_payload"),
        ("k2", {"action": "ring"}, "payload", "invalid_payload"),
        ("k3", {"action": "lock", "payload": {"mesage": "typo"}}, "payload", "invalid_payload"),
        ("k4", {"action": "selfdestruct"}, "action", "invalid_argument"),
    ):
        refused = _command(client, admin, key, body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == code and refused.json()["errors"][0]["field"] == field
    campaign = client.post(
        "/v1/campaigns",
        json={"action": "uninstall_app", "payload": {"package": "nope"}, "selector": "all"},
        headers=admin | {"Idempotency-Key": "c1"},
    )
    assert campaign.status_code == 422 and campaign.json()["errors"][0]["field"] == "payload.package"
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(FcmDispatch)).scalar_one() == 0


def test_an_action_needs_its_own_least_role(
    client: TestClient[Any], enroll: Callable[..., str], session_factory: sessionmaker[Session], admin: dict[str, str]
) -> None:
    enroll("dev_001")
    operator = _key(session_factory, "operator")
    wipe = {"action": "wipe", "payload": {"reason": "stolen"}}
    refused = _command(client, operator, "w1", wipe)
    assert refused.status_code == 403 and refused.json()["code"] == "insufficient_role"
    campaign = client.post(
        "/v1/campaigns", json=wipe | {"selector": "all"}, headers=operator | {"Idempotency-Key": "cw1"}
    )
    assert campaign.status_code == 403
    assert _command(client, operator, "r1", {"action": "reboot"}).status_code == 202
    assert _command(client, admin, "w2", wipe).status_code == 202


def test_typed_acks_lost_mode_and_audited_location_reads(
    client: TestClient[Any], admin: dict[str, str], enroll: Callable[..., str], session_factory: sessionmaker[Session]
) -> None:
    device = bearer(enroll("dev_001"))
    operator, viewer = _key(session_factory, "operator"), _key(session_factory, "viewer")
    assert client.post("/v1/location", json=FIX, headers=device).json()["code"] == "not_in_lost_mode"
    _command(client, admin, "loc-1", {"action": "locate"})
    bad = client.post("/v1/commands/loc-1/ack", json={"status": "completed", "result": {"lat": 1}}, headers=device)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_result"
    unknown_code = client.post(
        "/v1/commands/loc-1/ack", json={"status": "failed", "error_code": "NO_GPS"}, headers=device
    )
    assert unknown_code.status_code == 422
    assert client.get("/v1/commands/loc-1", headers=admin).json()["status"] == "pending"
    good = client.post("/v1/commands/loc-1/ack", json={"status": "completed", "result": FIX}, headers=device)
    assert good.status_code == 200 and good.json()["result"] == FIX
    assert client.get("/v1/commands/loc-1", headers=admin).json()["result"] == FIX

    _command(client, admin, "lost-1", {"action": "lost_mode", "payload": {"message": "Call IT", "phone": "+34 91 000"}})
    assert client.post("/v1/commands/lost-1/ack", json={"status": "completed"}, headers=device).status_code == 200
    listed = client.get("/v1/devices", params={"selector": "@lost=true"}, headers=admin).json()
    assert [d["device_id"] for d in listed["items"]] == ["dev_001"]
    reported = client.post("/v1/location", json=FIX | {"lat": 40.5}, headers=device)
    assert reported.status_code == 201 and reported.json()["source"] == "lost_mode"

    assert client.get("/v1/devices/dev_001/location", headers=viewer).status_code == 403
    last = client.get("/v1/devices/dev_001/location", headers=operator).json()
    assert last["lost_mode"]["message"] == "Call IT" and last["location"]["lat"] in (40.4168, 40.5)
    page = client.get("/v1/devices/dev_001/locations", params={"limit": 1}, headers=operator).json()
    assert page["items"][0]["lat"] == 40.5 and page["next_cursor"]
    rest = client.get("/v1/devices/dev_001/locations", params={"cursor": page["next_cursor"]}, headers=operator).json()
    assert [i["source"] for i in rest["items"]] == ["locate"] and rest["next_cursor"] is None
    assert client.get("/v1/devices/ghost/location", headers=operator).status_code == 404
    with session_factory() as db:
        reads = db.execute(
            select(AuditEvent.actor, AuditEvent.outcome).where(AuditEvent.action == "location.read")
        ).all()
    assert sorted(reads) == [("key:k-operator", "success")] * 3
