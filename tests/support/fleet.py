"""A known fleet for selector and campaign tests, seeded with a few statements (no HTTP)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, insert, text, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.versions import version_key
from core.models import Device, DeviceLabel, FcmDispatch
from core.storage.types import utcnow

#: id -> (labels, fields)
FLEET: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "a1": ({"store": "42", "ring": "canary"}, {"seen": 10, "agent_version": "2.0.4", "last_battery_pct": 80}),
    "a2": ({"store": "42"}, {"seen": 1000, "agent_version": "2.0.10", "last_battery_pct": 20, "model": "Pixel 8"}),
    "a3": ({"store": "7", "acme.io/ring": "beta"}, {"seen": None, "agent_version": "1.9.2-rc1"}),
    "a4": ({"store": "7", "empty": ""}, {"seen": 10_000, "agent_version": "beta", "last_plugged": True}),
    "a5": ({}, {"seen": 30, "agent_version": "2.1", "last_network_type": "wifi", "last_plugged": False}),
    "r1": ({"store": "42"}, {"seen": 10, "revoked": True}),
}


def seed_fleet(factory: sessionmaker[Session], fleet: dict[str, tuple[dict[str, str], dict[str, Any]]] = FLEET) -> None:
    now = utcnow()
    with factory.begin() as db:
        for device_id, (labels, fields) in fleet.items():
            fields = dict(fields)
            seen = fields.pop("seen", None)
            revoked = fields.pop("revoked", False)
            version = fields.get("agent_version")
            db.add(
                Device(
                    id=device_id,
                    last_seen_at=None if seen is None else now - timedelta(seconds=seen),
                    revoked_at=now if revoked else None,
                    agent_version_key=version_key(version),
                    **fields,
                )
            )
            db.flush()
            for key, value in labels.items():
                db.add(DeviceLabel(device_id=device_id, key=key, value=value))


def seed_many(db: Session, n: int, prefix: str = "d", labels: dict[str, str] | None = None) -> list[str]:
    """``n`` devices in one statement (plus one per label)."""
    ids = [f"{prefix}{i:06d}" for i in range(n)]
    db.execute(insert(Device), [{"id": i, "enrolled_at": utcnow()} for i in ids])
    for key, value in (labels or {}).items():
        db.execute(insert(DeviceLabel), [{"device_id": i, "key": key, "value": value} for i in ids])
    return ids


def ack_all(factory: sessionmaker[Session], campaign_id: str, status: str = "acked", limit: int | None = None) -> int:
    """Finish up to ``limit`` pending commands of a campaign as a device would."""
    with factory.begin() as db:
        ids = (
            db.query(FcmDispatch.id)
            .filter(FcmDispatch.campaign_id == campaign_id, FcmDispatch.status == "pending")
            .order_by(FcmDispatch.id)
            .limit(limit)
            .all()
        )
        now = utcnow()
        return db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.id.in_([i for (i,) in ids]))
            .values(status=status, acked_at=now, finished_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount


#: ``@model`` has no index: to find its two devices among ``seed_pixels``' the query reads every device
SCANNING = '@model="Pixel 8"'


def seed_pixels(engine: Engine, n: int = 100_000) -> list[str]:
    """PostgreSQL: ``n`` devices in one statement, Pixel 7s but for two Pixel 8s (returned, in id order).

    A selector on ``@model`` reads all of them (~7 ms at 100,000 on a 2-core machine): long enough for a
    statement limit of 1 ms to cancel it for real."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO devices (id, enrolled_at, generation, model) "
                "SELECT 'dev' || lpad(g::text, 6, '0'), now(), 1, "
                "CASE WHEN g IN (7, :last) THEN 'Pixel 8' ELSE 'Pixel 7' END FROM generate_series(1, :n) g"
            ),
            {"n": n, "last": n - 1000},
        )
        conn.execute(text("ANALYZE devices"))
    return [f"dev{7:06d}", f"dev{n - 1000:06d}"]
