"""Outcome-gated campaigns on both databases: already satisfied targets skipped without a command,
success after the ack once the device matches, outcome timeouts, halts on outcome failures, a restart
mid-campaign, and the failure groups."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.base.versions import version_key
from core.campaigns import outcomes, release
from core.models import CampaignTarget, Device, FcmDispatch
from core.storage.engine import make_engine, make_session_factory
from core.storage.types import utcnow
from tests.support.fleet import ack_all, seed_many

UNTIL = "@agent_version>=2.0"


@pytest.fixture(autouse=True)
def sweep_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round sweeps (a server sweeps at most every ``SWEEP_EVERY_SECONDS``; one test keeps that)."""
    monkeypatch.setattr(outcomes, "SWEEP_EVERY_SECONDS", 0)


def _seed(factory: sessionmaker[Session], n: int, *, upgraded: int = 0) -> list[str]:
    """``n`` devices on agent 1.0, the first ``upgraded`` of them already on 2.0."""
    with factory.begin() as db:
        ids = seed_many(db, n)
        db.execute(update(Device).values(agent_version="1.0", agent_version_key=version_key("1.0")))
    _upgrade(factory, ids[:upgraded])
    return ids


def _upgrade(factory: sessionmaker[Session], ids: list[str]) -> None:
    with factory.begin() as db:
        db.execute(
            update(Device).where(Device.id.in_(ids)).values(agent_version="2.0", agent_version_key=version_key("2.0"))
        )


def _create(factory: sessionmaker[Session], settings: Settings, **kw: object) -> dict:
    kw.setdefault("action", "update_agent")
    kw.setdefault("payload", {"build_id": 1})
    kw.setdefault("selector", "all")
    kw.setdefault("success_when", UNTIL)
    with factory.begin() as db:
        created, campaign = fleet.create_campaign(db, settings, idempotency_key="k1", **kw)  # type: ignore[arg-type]
    assert created
    return campaign


def _get(factory: sessionmaker[Session], campaign_id: str) -> dict:
    with factory() as db:
        return fleet.get_campaign(db, campaign_id)


def _total(counts: dict) -> int:
    keys = ("skipped", "queued", "pending", "acked", "succeeded", "failed", "expired", "cancelled")
    return sum(counts[k] for k in keys)


def test_already_satisfied_targets_are_skipped_without_a_command(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    ids = _seed(session_factory, 30, upgraded=10)
    campaign = _create(session_factory, settings, waves={"percent": 50, "interval_seconds": 600})
    assert campaign["success_when"] == UNTIL and campaign["outcome_timeout_seconds"] == 3600
    counts = campaign["counts"]
    assert counts["skipped"] == 10 and counts["queued"] == 20 and _total(counts) == campaign["targeted"] == 30
    # waves are over the 20 that need the command: two of 10
    assert campaign["waves"]["size"] == 10 and campaign["waves"]["count"] == 2
    release.run_due(session_factory, settings)
    with session_factory() as db:
        sent = set(db.scalars(select(FcmDispatch.device_id)))
        skipped = db.execute(select(CampaignTarget.device_id, CampaignTarget.reason, CampaignTarget.wave)).all()
    assert len(sent) == 10 and not sent & set(ids[:10])
    assert {(d, r, w) for d, r, w in skipped if r} == {(d, "already_satisfied", 0) for d in ids[:10]}
    with session_factory() as db:
        drill = fleet.campaign_devices(db, campaign["id"], status="skipped")
    assert [d["device_id"] for d in drill] == ids[:10] and drill[0]["request_id"] is None


def test_everything_satisfied_completes_without_a_command(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 4, upgraded=4)
    campaign = _create(session_factory, settings)
    assert campaign["counts"]["skipped"] == 4 and campaign["waves"]["count"] == 0
    release.run_due(session_factory, settings)
    done = _get(session_factory, campaign["id"])
    assert done["status"] == "completed" and done["counts"]["skipped"] == 4
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 0


def test_success_after_the_ack_once_the_device_matches(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    ids = _seed(session_factory, 6)
    campaign = _create(session_factory, settings)
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"], limit=4)
    ack_all(session_factory, campaign["id"], status="failed")  # the last two: a failed ack stays a failure
    counts = _get(session_factory, campaign["id"])["counts"]
    assert counts["acked"] == 4 and counts["succeeded"] == 0 and counts["failed"] == 2
    # a device reports the new agent: the heartbeat/inventory path checks it alone
    _upgrade(session_factory, ids[:2] + ids[5:])
    with session_factory.begin() as db:
        assert fleet.check_device(db, ids[0], settings) == [campaign["id"]]
        assert fleet.check_device(db, ids[0], settings) == []  # decided once
        assert fleet.check_device(db, ids[5], settings) == []  # its ack failed: no outcome to wait for
    assert _get(session_factory, campaign["id"])["counts"]["succeeded"] == 1
    release.run_due(session_factory, settings)  # the sweep finds the other one
    running = _get(session_factory, campaign["id"])
    assert running["status"] == "running"  # two acked targets still wait for their outcome
    assert running["counts"]["succeeded"] == 2 and running["counts"]["acked"] == 2 and _total(running["counts"]) == 6
    _upgrade(session_factory, ids[2:4])
    release.run_due(session_factory, settings)
    done = _get(session_factory, campaign["id"])
    assert done["status"] == "completed"
    assert (done["counts"]["succeeded"], done["counts"]["failed"], done["counts"]["acked"]) == (4, 2, 0)


def test_acked_but_never_matching_fails_with_outcome_timeout(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    ids = _seed(session_factory, 3)
    campaign = _create(session_factory, settings, outcome_timeout_seconds=600)
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"])
    _upgrade(session_factory, ids[:1])
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=599))
    assert _get(session_factory, campaign["id"])["counts"]["acked"] == 2
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=601))
    done = _get(session_factory, campaign["id"])
    assert done["status"] == "completed"
    assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (1, 2)
    with session_factory() as db:
        failed = fleet.campaign_devices(db, campaign["id"], status="failed")
        reasons = set(db.scalars(select(CampaignTarget.reason).where(CampaignTarget.state == "failed")))
    assert [d["device_id"] for d in failed] == ids[1:] and reasons == {"outcome_timeout"}


def test_gates_count_outcomes_not_acks(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 20)
    campaign = _create(
        session_factory,
        settings,
        outcome_timeout_seconds=60,
        waves={"size": 10, "interval_seconds": 120, "max_failure_pct": 20},
    )
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"])  # every device acks, none changes
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=59))
    waiting = _get(session_factory, campaign["id"])
    assert waiting["status"] == "running" and waiting["counts"]["acked"] == 10  # acks: neither success nor failure
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=61))
    halted = _get(session_factory, campaign["id"])
    assert (halted["status"], halted["reason"]) == ("halted", "max_failure")
    assert halted["counts"]["failed"] == 10 and halted["counts"]["queued"] == 10


def test_min_success_waits_for_outcomes(session_factory: sessionmaker[Session], settings: Settings) -> None:
    ids = _seed(session_factory, 4)
    campaign = _create(session_factory, settings, waves={"size": 2, "min_success_pct": 100})
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"])
    release.run_due(session_factory, settings)
    assert _get(session_factory, campaign["id"])["waves"]["released"] == 1  # acked is not succeeded
    with session_factory() as db:
        first = list(db.scalars(select(FcmDispatch.device_id)))
    _upgrade(session_factory, first)
    release.run_due(session_factory, settings)
    assert _get(session_factory, campaign["id"])["waves"]["released"] == 2
    assert len(set(ids) - set(first)) == 2


def test_restart_mid_campaign_resumes_from_the_database(
    engine: Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    ids = _seed(session_factory, 8, upgraded=2)
    campaign = _create(session_factory, settings, waves={"size": 3, "min_success_pct": 50})
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"])
    with session_factory() as db:
        first = list(db.scalars(select(FcmDispatch.device_id).order_by(FcmDispatch.device_id)))
    _upgrade(session_factory, first[:2])
    engine.dispose()  # every worker and server stops; new ones start on the same database
    restarted = make_engine(settings.database_url)
    try:
        factory = make_session_factory(restarted, settings)
        release.run_due(factory, settings)
        state = _get(factory, campaign["id"])
        assert state["counts"]["succeeded"] == 2 and state["counts"]["acked"] == 1
        assert state["waves"]["released"] == 2 and state["counts"]["skipped"] == 2
        with factory() as db:
            sent = set(db.scalars(select(FcmDispatch.device_id)))
        assert len(sent) == 6 and not sent & set(ids[:2])
    finally:
        restarted.dispose()


def test_failure_groups_by_reason_model_and_os_version(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    ids = _seed(session_factory, 9)
    with session_factory.begin() as db:
        for i, device_id in enumerate(ids):
            model, os_version = ("Galaxy A10", "11") if i < 5 else ("Pixel 8", "14")
            db.execute(update(Device).where(Device.id == device_id).values(model=model, os_version=os_version))
        db.execute(update(Device).where(Device.id == ids[8]).values(model=None, os_version=None))
    campaign = _create(session_factory, settings, outcome_timeout_seconds=60)
    release.run_due(session_factory, settings)
    now = utcnow()
    with session_factory.begin() as db:
        for i, device_id in enumerate(ids):
            status, detail = ("failed", "INSUFFICIENT_STORAGE") if i < 4 else ("acked", "done")
            if i == 5:
                status, detail = "failed", "disk full, try again"
            db.execute(
                update(FcmDispatch)
                .where(FcmDispatch.device_id == device_id)
                .values(status=status, ack_detail=detail, acked_at=now, finished_at=now)
            )
    release.run_due(session_factory, settings, now + timedelta(seconds=61))  # 4, 6, 7, 8: outcome_timeout
    with session_factory() as db:
        report = fleet.failure_groups(db, campaign["id"])
        storage = fleet.failed_devices(db, campaign["id"], reason="INSUFFICIENT_STORAGE")
        pixels = fleet.failed_devices(db, campaign["id"], reason="outcome_timeout", model="Pixel 8", limit=1)
        with pytest.raises(InvalidArgument):
            fleet.failed_devices(db, campaign["id"], reason="no such; reason")
    groups = [(g["reason"], g["model"], g["os_version"], g["count"]) for g in report["groups"]]
    assert report["failed"] == 9
    assert groups == [
        ("INSUFFICIENT_STORAGE", "Galaxy A10", "11", 4),
        ("outcome_timeout", "Pixel 8", "14", 2),
        ("failed", "Pixel 8", "14", 1),
        ("outcome_timeout", "Galaxy A10", "11", 1),
        ("outcome_timeout", "unknown", "unknown", 1),
    ]
    assert report["groups"][0]["sample_device_ids"] == ids[:3]
    assert [d["device_id"] for d in storage] == ids[:4] and storage[0]["detail"] == "INSUFFICIENT_STORAGE"
    assert [d["device_id"] for d in pixels] == [ids[6]] and pixels[0]["failed_at"] is not None


def test_success_when_is_validated_before_anything_is_written(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 2)
    bad = [
        ({"success_when": "@agent_version>>2"}, "success_when"),
        ({"success_when": "all"}, "success_when"),
        ({"success_when": UNTIL, "outcome_timeout_seconds": 5}, "outcome_timeout_seconds"),
        ({"success_when": None, "outcome_timeout_seconds": 600}, "outcome_timeout_seconds"),
    ]
    for kw, field in bad:
        with session_factory.begin() as db, pytest.raises(InvalidArgument) as error:
            fleet.create_campaign(db, settings, idempotency_key="k", action="sync", selector="all", **kw)  # type: ignore[arg-type]
        assert error.value.field == field, kw
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(CampaignTarget)) == 0


def test_the_maintenance_sweep_is_throttled_per_campaign(
    session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcomes, "SWEEP_EVERY_SECONDS", 5.0)
    ids = _seed(session_factory, 2)
    campaign = _create(session_factory, settings)
    now = utcnow()
    release.run_due(session_factory, settings, now)  # swept (nothing to decide), then released
    ack_all(session_factory, campaign["id"])
    _upgrade(session_factory, ids)
    release.run_due(session_factory, settings, now + timedelta(seconds=4))
    assert _get(session_factory, campaign["id"])["counts"]["succeeded"] == 0  # swept 4 s ago: not again
    with session_factory.begin() as db:  # a device's own change is decided at once
        assert fleet.check_device(db, ids[0], settings) == [campaign["id"]]
    release.run_due(session_factory, settings, now + timedelta(seconds=6))
    done = _get(session_factory, campaign["id"])
    assert done["counts"]["succeeded"] == 2 and done["status"] == "completed"
