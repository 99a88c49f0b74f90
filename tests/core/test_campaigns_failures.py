"""A campaign's failure groups on both databases: the order of the groups (largest first, ties by reason,
model, OS version), each group's samples (its lowest three device ids, in order, whatever order the rows
were written in), groups of fewer than three, and the same answer as grouping the drill-down by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.settings import Settings
from core.base.versions import version_key
from core.campaigns import outcomes, release
from core.models import Device, DeviceInventory, FcmDispatch
from core.storage.types import utcnow

#: device -> (model, os_version at enrollment, command status, error_code, ack detail); written in this order
DEVICES = {
    "d07": ("Galaxy A10", "11", "failed", "INSUFFICIENT_STORAGE", None),
    "d03": ("Galaxy A10", "11", "failed", None, "INSUFFICIENT_STORAGE"),
    "d12": ("Pixel 7", "13", "failed", "DOWNLOAD_FAILED", None),
    "d11": ("Galaxy A10", "11", "failed", "INSUFFICIENT_STORAGE", None),
    "d14": ("TC52", "13", "acked", None, "done"),
    "d01": ("Galaxy A10", "11", "failed", None, "INSUFFICIENT_STORAGE"),
    "d10": ("Pixel 7", "12", "failed", "DOWNLOAD_FAILED", None),
    "d13": ("Pixel 7", "12", "expired", None, None),
    "d09": ("Galaxy A10", "11", "failed", "INSUFFICIENT_STORAGE", None),
    "d06": ("TC52", "13", "acked", None, "done"),
    "d04": ("Pixel 7", "13", "failed", "DOWNLOAD_FAILED", None),
    "d02": ("Pixel 7", "12", "failed", None, "DOWNLOAD_FAILED"),
    "d00": (None, None, "failed", None, "disk full, try again"),
    "d15": ("Pixel 7", "12", "failed", "INSUFFICIENT_STORAGE", None),  # its inventory says Galaxy A10 / 11
    "d05": ("Pixel 7", "12", "expired", None, None),
    "d08": ("TC52", "13", "acked", None, "done"),
    "d16": ("TC52", "13", "pending", None, None),  # not failed (yet)
}


@pytest.fixture(autouse=True)
def sweep_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outcomes, "SWEEP_EVERY_SECONDS", 0)


def _failed_campaign(factory: sessionmaker[Session], settings: Settings) -> str:
    """An outcome-gated campaign to ``DEVICES``; the acked ones time out on their outcome."""
    now = utcnow()
    with factory.begin() as db:
        db.execute(
            insert(Device),
            [
                {"id": i, "enrolled_at": now, "model": m, "os_version": v, "agent_version": "1.0"}
                for i, (m, v, *_) in DEVICES.items()
            ],
        )
        db.execute(update(Device).values(agent_version_key=version_key("1.0")))
        db.execute(
            insert(DeviceInventory),
            [{"device_id": "d15", "hash": "h", "model": "Galaxy A10", "os_version": "11", "reported_at": now}],
        )
        _, campaign = fleet.create_campaign(
            db,
            settings,
            idempotency_key="k1",
            action="update_agent",
            payload={"build_id": 1},
            selector="all",
            success_when="@agent_version>=2.0",
            outcome_timeout_seconds=60,
        )
    release.run_due(factory, settings)
    with factory.begin() as db:
        for device_id, (_, _, status, code, detail) in DEVICES.items():
            db.execute(
                update(FcmDispatch)
                .where(FcmDispatch.device_id == device_id)
                .values(status=status, error_code=code, ack_detail=detail, acked_at=now, finished_at=now)
            )
    release.run_due(factory, settings, now + timedelta(seconds=61))
    return str(campaign["id"])


def test_groups_largest_first_ties_by_key_samples_lowest_three(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    campaign = _failed_campaign(session_factory, settings)
    with session_factory() as db:
        report = fleet.failure_groups(db, campaign)
        drill = fleet.failed_devices(db, campaign, limit=1000)
    groups = [(g["reason"], g["model"], g["os_version"], g["count"], g["sample_device_ids"]) for g in report["groups"]]
    assert groups == [
        ("INSUFFICIENT_STORAGE", "Galaxy A10", "11", 6, ["d01", "d03", "d07"]),
        ("outcome_timeout", "TC52", "13", 3, ["d06", "d08", "d14"]),
        ("DOWNLOAD_FAILED", "Pixel 7", "12", 2, ["d02", "d10"]),
        ("DOWNLOAD_FAILED", "Pixel 7", "13", 2, ["d04", "d12"]),
        ("expired", "Pixel 7", "12", 2, ["d05", "d13"]),
        ("failed", "unknown", "unknown", 1, ["d00"]),
    ]
    assert report == {"campaign_id": campaign, "failed": 16, "groups": report["groups"]}
    # the drill-down (by device id) grouped by hand gives the same groups, counts and samples
    by_hand: dict[tuple[str, str, str], list[str]] = {}
    for row in drill:
        by_hand.setdefault((row["reason"], row["model"], row["os_version"]), []).append(row["device_id"])
    expected = sorted(((*key, len(ids), ids[:3]) for key, ids in by_hand.items()), key=lambda g: (-g[3], g[:3]))
    assert groups == expected


def test_no_failures_no_groups(session_factory: sessionmaker[Session], settings: Settings) -> None:
    with session_factory.begin() as db:
        db.execute(insert(Device), [{"id": "d1", "enrolled_at": utcnow()}])
        _, campaign = fleet.create_campaign(db, settings, idempotency_key="k1", action="sync", selector="all")
    with session_factory() as db:
        assert fleet.failure_groups(db, campaign["id"]) == {"campaign_id": campaign["id"], "failed": 0, "groups": []}
