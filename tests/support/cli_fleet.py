"""A small fleet with known figures, for ``nexmdm top`` and the fleet-state gauges (labels and campaigns
on top of it for the selector and campaign cases)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core import db_utils
from core.base.settings import Settings
from core.enrollment.enroll import revoke_device
from core.models import DeviceLabel, FcmDispatch
from core.storage.types import utcnow
from tests.support.cli import seed_heartbeat
from tests.support.databases import add_device

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


#: ``store=1``: one device of each state, the revoked one included; every other device is ``store=2``
STORE_1 = ("dev_on_a", "dev_stale_a", "dev_off_10m", "dev_off_3h", "dev_revoked")
#: what ``--selector store=1`` must show (the revoked device is counted as revoked: it never *matches*)
EXPECTED_STORE_1: dict[str, Any] = {
    "devices": {"online": 1, "stale": 1, "offline": 2, "revoked": 1, "total": 5},
    "heartbeats_last_minute": 3,  # dev_on_a's three beats; dev_on_b's is in store 2
    "went_offline": ["dev_off_10m"],
}


def seed_labels(factory: sessionmaker[Session]) -> None:
    """``store=1`` on ``STORE_1``, ``store=2`` on the rest of ``seed_fleet``'s devices."""
    others = ("dev_on_b", "dev_on_c", "dev_stale_b", "dev_off_40m", "dev_never")
    rows = [{"device_id": d, "key": "store", "value": "1"} for d in STORE_1]
    rows += [{"device_id": d, "key": "store", "value": "2"} for d in others]
    with factory.begin() as db:
        db.execute(insert(DeviceLabel), rows)


def _finish(factory: sessionmaker[Session], campaign_id: str, statuses: list[str]) -> None:
    """The campaign's released commands (by request id) finish with ``statuses`` in turn, as devices would."""
    with factory.begin() as db:
        ids = db.scalars(
            select(FcmDispatch.id).where(FcmDispatch.campaign_id == campaign_id).order_by(FcmDispatch.request_id)
        ).all()
        now = utcnow()
        for row_id, status in zip(ids, statuses, strict=False):
            db.execute(
                update(FcmDispatch).where(FcmDispatch.id == row_id).values(status=status, acked_at=now, finished_at=now)
            )


def seed_campaigns(factory: sessionmaker[Session], settings: Settings) -> dict[str, str]:
    """Three campaigns on the labelled fleet (``seed_fleet`` then ``seed_labels``), oldest first:

    * ``done``: ``ping`` to dev_on_b alone, acked: completed (never shown as in flight);
    * ``paused``: ``sync`` to ``store=2`` (5 devices) at once, paused: 5 pending;
    * ``running``: ``lock`` to ``store=1`` (4 devices: the revoked one is never a target) in waves of 2,
      an hour apart: wave 1 of 2 released, one acked and one failed, 2 queued.
    """

    def create(key: str, **kw: Any) -> str:
        with factory.begin() as db:
            _, campaign = fleet.create_campaign(db, settings, idempotency_key=key, **kw)
        fleet.advance(factory, campaign["id"])
        return str(campaign["id"])

    done = create("top-done", action="ping", device_ids=["dev_on_b"])
    _finish(factory, done, ["acked"])
    fleet.advance(factory, done)
    paused = create("top-paused", action="sync", selector="store=2")
    with factory.begin() as db:
        fleet.pause(db, paused)
    running = create("top-running", action="lock", selector="store=1", waves={"size": 2, "interval_seconds": 3600})
    _finish(factory, running, ["acked", "failed"])
    fleet.advance(factory, running)
    return {"done": done, "paused": paused, "running": running}


#: the in-flight campaigns of ``seed_campaigns``, newest first
EXPECTED_CAMPAIGNS: list[dict[str, Any]] = [
    {
        "action": "lock",
        "status": "running",
        "targeted": 4,
        "waves": (1, 2),
        "counts": {"queued": 2, "pending": 0, "acked": 1, "failed": 1, "expired": 0, "cancelled": 0},
    },
    {
        "action": "sync",
        "status": "paused",
        "targeted": 5,
        "waves": (1, 1),
        "counts": {"queued": 0, "pending": 5, "acked": 0, "failed": 0, "expired": 0, "cancelled": 0},
    },
]
