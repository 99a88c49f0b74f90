"""A small fleet with known figures, for ``nexmdm top`` and the fleet-state gauges."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core import db_utils
from core.devices import revoke_device
from core.models import FcmDispatch
from core.types import utcnow
from tests.cli.helpers import seed_heartbeat
from tests.conftest import add_device

#: what the seeded fleet must show (default thresholds: online ≤ 5 min, offline > 1 h)
EXPECTED: dict[str, Any] = {
    "devices": {"online": 3, "stale": 2, "offline": 4, "revoked": 1, "total": 10},
    "heartbeats_last_minute": 4,
    "commands_last_hour": {"pending": 1, "acked": 2, "failed": 1, "expired": 0},
    "pending_now": 2,
    "push_queue_depth": 1,
    "push_ms": {"p50": 300.0, "p99": 400.0},
    "ack_ms": {"p50": 4000.0, "p99": 6000.0},
    "went_offline": ["dev_off_10m", "dev_off_40m"],
}


def _command(
    factory: sessionmaker[Session], request_id: str, ago: timedelta, status: str, fcm_status: str, **after_ms: int
) -> None:
    created = utcnow() - ago
    values: dict[str, Any] = {"created_at": created, "status": status, "fcm_status": fcm_status}
    for column, ms in after_ms.items():
        values[column] = created + timedelta(milliseconds=ms)
    with factory.begin() as db:
        db_utils.record_fcm_dispatch(
            db, request_id=request_id, device_id="dev_on_a", action="ping", payload_hash="0" * 64
        )
        db.execute(update(FcmDispatch).where(FcmDispatch.request_id == request_id).values(**values))


def seed_fleet(factory: sessionmaker[Session]) -> None:
    """Ten devices in every state, five heartbeats (four in the last minute), six commands."""
    for device_id in (
        "dev_on_a",
        "dev_on_b",
        "dev_on_c",
        "dev_stale_a",
        "dev_stale_b",
        "dev_off_10m",
        "dev_off_40m",
        "dev_off_3h",
        "dev_never",
        "dev_revoked",
    ):
        add_device(factory, device_id)
    # the oldest bucket starts at most 45 s ago: a slow run keeps it inside the last minute
    for seconds in (35, 25, 5):
        seed_heartbeat(factory, "dev_on_a", timedelta(seconds=seconds), battery_pct=80, network_type="wifi")
    seed_heartbeat(factory, "dev_on_b", timedelta(seconds=20), battery_pct=60, network_type="cellular")
    seed_heartbeat(factory, "dev_on_c", timedelta(minutes=2), battery_pct=40)
    seed_heartbeat(factory, "dev_stale_a", timedelta(minutes=10))
    seed_heartbeat(factory, "dev_stale_b", timedelta(minutes=30))
    seed_heartbeat(factory, "dev_off_10m", timedelta(minutes=70))
    seed_heartbeat(factory, "dev_off_40m", timedelta(minutes=100))
    seed_heartbeat(factory, "dev_off_3h", timedelta(hours=3))
    seed_heartbeat(factory, "dev_revoked", timedelta(minutes=70))
    with factory.begin() as db:
        revoke_device(db, "dev_revoked")
    _command(factory, "cmd_pending", timedelta(minutes=10), "pending", "pending")
    _command(factory, "cmd_acked_a", timedelta(minutes=5), "acked", "sent", sent_at=200, acked_at=2000)
    _command(factory, "cmd_acked_b", timedelta(minutes=20), "acked", "sent", sent_at=400, acked_at=4000)
    _command(factory, "cmd_failed", timedelta(minutes=30), "failed", "sent", sent_at=300, acked_at=6000)
    _command(factory, "cmd_expired_old", timedelta(hours=2), "expired", "skipped")
    _command(factory, "cmd_pending_old", timedelta(hours=3), "pending", "sent", sent_at=100)
