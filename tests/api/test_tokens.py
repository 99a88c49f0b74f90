"""POST /v1/tokens with labels: accepted with the CLI's validation, listed, audited, given to enrolled devices."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import AuditEvent


def test_a_token_carries_labels_to_its_listing_its_audit_row_and_its_devices(
    client: TestClient[Any], admin: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    created = client.post("/v1/tokens", json={"uses": 2, "labels": {"store": "42", "acme.io/ring": "b"}}, headers=admin)
    assert created.status_code == 201, created.text
    token = created.json()
    assert token["labels"] == {"store": "42", "acme.io/ring": "b"}

    listed = client.get("/v1/tokens", headers=admin).json()["items"]
    assert [t["labels"] for t in listed if t["id"] == token["id"]] == [{"store": "42", "acme.io/ring": "b"}]

    with session_factory() as db:
        details = db.execute(select(AuditEvent.details).where(AuditEvent.action == "token.create")).scalar_one()
    assert details["labels"] == {"store": "42", "acme.io/ring": "b"}

    enrolled = client.post(
        "/v1/enroll", json={"device_id": "dev_l"}, headers={"Authorization": f"Bearer {token['secret']}"}
    )
    assert enrolled.status_code == 201, enrolled.text
    assert client.get("/v1/devices/dev_l", headers=admin).json()["labels"] == {"store": "42", "acme.io/ring": "b"}


def test_a_token_without_labels_lists_none(client: TestClient[Any], admin: dict[str, str]) -> None:
    assert client.post("/v1/tokens", json={}, headers=admin).json()["labels"] == {}
    assert [t["labels"] for t in client.get("/v1/tokens", headers=admin).json()["items"]] == [{}]


@pytest.mark.parametrize(
    "labels",
    [
        {"Store": "42"},  # upper case key
        {"store": "4 2"},  # a space in the value
        {"-store": "42"},  # a key must start with a letter or digit
        {f"k{i}": "v" for i in range(33)},  # more than 32
    ],
)
def test_labels_the_cli_refuses_are_422_and_create_nothing(
    client: TestClient[Any], admin: dict[str, str], labels: dict[str, str]
) -> None:
    refused = client.post("/v1/tokens", json={"labels": labels}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert client.get("/v1/tokens", headers=admin).json()["items"] == []
