"""Profile rollouts on both databases: waves move only their devices, compliance decides each device,
the failure gate halts with the rest held, pause/resume, restarts never move a wave twice, superseding."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.errors import Conflict, InvalidArgument
from core.base.settings import Settings
from core.campaigns import profile_release, profile_rollouts, release
from core.campaigns.profile_rollouts import validate_rollout
from core.enrollment.enroll import enroll_device, revoke_device
from core.enrollment.tokens import create_enrollment_token
from core.models import Campaign, CampaignTarget, Device, DeviceProfile, ProfileVersion
from core.profiles import compliance, effective, holds, store
from core.storage.dialect import xact_lock
from core.storage.types import utcnow
from tests.support.fleet import seed_many
from tests.support.profiles import ACTOR, profile
from tests.support.rollouts import fresh, hashes, report, roll


def _seed(factory: sessionmaker[Session], settings: Settings, n: int = 20, store_label: str = "1") -> list[str]:
    with factory.begin() as db:
        ids = seed_many(db, n, prefix=f"s{store_label}-", labels={"store": store_label})
    fresh(factory, settings)
    return ids


def _pos(wifi: str, selector: str = "store=1") -> dict[str, Any]:
    return profile("pos", selector, settings={"wifi": wifi})


def _moved(factory: sessionmaker[Session], before: dict[str, str | None]) -> list[str]:
    return sorted(d for d, h in hashes(factory).items() if h != before[d])


def _campaign(factory: sessionmaker[Session], campaign_id: str) -> dict[str, Any]:
    with factory() as db:
        return fleet.get_campaign(db, campaign_id)


def _first_wave_of_b(
    factory: sessionmaker[Session], settings: Settings, n: int
) -> tuple[list[str], dict[str, str | None], dict[str, Any], list[str]]:
    """``n`` devices on version 1 ("a"), version 2 ("b") rolled out in waves of 5 (10 % may fail, a 60 s
    grace), its first wave released: the ids, the hashes before, the rollout and the first wave's devices."""
    ids = _seed(factory, settings, n)
    roll(factory, settings, _pos("a"), None)
    before = hashes(factory)
    rollout = roll(factory, settings, _pos("b"), {"wave_size": 5, "max_noncompliant_pct": 10, "grace_seconds": 60})
    fleet.advance(factory, rollout["rollout"]["id"])
    return ids, before, rollout["rollout"], _moved(factory, before)


def test_waves_move_only_their_devices_and_compliance_decides(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, settings)
    roll(session_factory, settings, _pos("a"), None)
    before = hashes(session_factory)
    assert len(set(before.values())) == 1 and None not in before.values()
    applied = roll(session_factory, settings, _pos("b"), {"wave_size": 5, "max_noncompliant_pct": 50})
    rollout = applied["rollout"]
    assert applied["version"] == 2 and rollout["kind"] == "profile"
    assert rollout["profile"] == {"name": "pos", "from_version": 1, "to_version": 2, "grace_seconds": 900}
    assert rollout["targeted"] == 20 and rollout["waves"]["count"] == 4
    assert hashes(session_factory) == before  # nothing moves before the first wave
    assert rollout["counts"]["queued"] == 20

    assert fleet.advance(session_factory, rollout["id"]) == ["released", "waiting"]
    first = _moved(session_factory, before)
    assert len(first) == 5
    counts = _campaign(session_factory, rollout["id"])["counts"]
    assert (counts["queued"], counts["pending"], counts["succeeded"]) == (15, 5, 0)
    assert counts["acked"] == counts["pushed"] == 0  # no command, no push
    # the next wave waits for every released device's outcome
    assert fleet.advance(session_factory, rollout["id"]) == ["waiting"]

    report(session_factory, settings, first, "compliant")
    counts = _campaign(session_factory, rollout["id"])["counts"]
    assert (counts["pending"], counts["succeeded"]) == (0, 5)
    assert fleet.advance(session_factory, rollout["id"]) == ["released", "waiting"]
    second = [d for d in _moved(session_factory, before) if d not in first]
    assert len(second) == 5
    with session_factory() as db:
        drill = fleet.campaign_devices(db, rollout["id"], status="pending")
        assert sorted(row["device_id"] for row in drill) == second
        assert {row["status"] for row in fleet.campaign_devices(db, rollout["id"])} == {
            "succeeded",
            "pending",
            "queued",
        }

    for _ in range(2):  # the other waves, each once its devices comply
        report(session_factory, settings, _moved(session_factory, before), "compliant")
        fleet.advance(session_factory, rollout["id"])
    report(session_factory, settings, _moved(session_factory, before), "compliant")
    assert fleet.advance(session_factory, rollout["id"]) == ["completed"]
    done = _campaign(session_factory, rollout["id"])
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 20
    with session_factory() as db:  # every hold released: the devices follow the profile again
        assert db.scalar(select(func.count()).where(DeviceProfile.version.is_not(None))) == 0


def test_noncompliance_past_the_threshold_halts_with_the_rest_held_then_resumes(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _, before, rollout, first = _first_wave_of_b(session_factory, settings, 20)
    report(session_factory, settings, first[:3], "compliant")
    report(session_factory, settings, first[3:4], "noncompliant")  # the fifth never reports
    now = utcnow()
    assert fleet.advance(session_factory, rollout["id"], now=now) == ["waiting"]  # within the grace
    later = now + timedelta(seconds=61)
    assert fleet.advance(session_factory, rollout["id"], now=later) == ["halted"]
    halted = _campaign(session_factory, rollout["id"])
    assert (halted["status"], halted["reason"]) == ("halted", "max_failure")
    assert (halted["counts"]["succeeded"], halted["counts"]["failed"], halted["counts"]["queued"]) == (3, 2, 15)
    with session_factory() as db:
        failed = {r["device_id"]: r["error_code"] for r in fleet.campaign_devices(db, rollout["id"], status="failed")}
    assert failed == {first[3]: "noncompliant", first[4]: "grace_expired"}
    with session_factory() as db:  # `campaigns failures` groups them by reason
        groups = fleet.failure_groups(db, rollout["id"])["groups"]
    assert sorted((g["reason"], g["count"]) for g in groups) == [("grace_expired", 1), ("noncompliant", 1)]
    assert fleet.advance(session_factory, rollout["id"], now=later) == ["idle"]
    assert _moved(session_factory, before) == first  # the other 15 stay on the previous version

    with session_factory.begin() as db, pytest.raises(Conflict):
        fleet.resume(db, rollout["id"])  # halted: new thresholds or ignore_failures
    with session_factory.begin() as db:
        fleet.resume(db, rollout["id"], max_failure_pct=50, actor=ACTOR)
    assert fleet.advance(session_factory, rollout["id"], now=later)[0] == "released"
    assert len(_moved(session_factory, before)) == 10


def test_pause_holds_the_next_wave_and_cancel_keeps_the_rest_held(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, settings)
    roll(session_factory, settings, _pos("a"), None)
    before = hashes(session_factory)
    rollout = roll(session_factory, settings, _pos("b"), {"wave_percent": 50})["rollout"]
    assert rollout["waves"]["size"] == 10 and rollout["waves"]["count"] == 2
    with session_factory.begin() as db:
        fleet.pause(db, rollout["id"], actor=ACTOR)
    assert fleet.advance(session_factory, rollout["id"]) == ["idle"]
    assert _moved(session_factory, before) == []
    with session_factory.begin() as db:
        fleet.resume(db, rollout["id"], actor=ACTOR)
    fleet.advance(session_factory, rollout["id"])
    assert len(_moved(session_factory, before)) == 10
    with session_factory.begin() as db:
        cancelled = fleet.cancel(db, rollout["id"], actor=ACTOR)
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 20
    fleet.run_due(session_factory, settings)
    assert len(_moved(session_factory, before)) == 10  # the other half stays held at version 1
    roll(session_factory, settings, _pos("c"), None)  # a new apply ends every hold
    assert len(set(hashes(session_factory).values())) == 1
    with session_factory() as db:
        assert db.scalar(select(func.count()).where(DeviceProfile.version.is_not(None))) == 0


def test_a_release_repeated_or_interrupted_never_moves_a_wave_twice(
    session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(session_factory, settings)
    roll(session_factory, settings, _pos("a"), None)
    before = hashes(session_factory)
    rollout = roll(session_factory, settings, _pos("b"), {"wave_size": 6})["rollout"]
    monkeypatch.setattr(release, "RELEASE_BATCH", 4)
    with session_factory.begin() as db:  # one batch, then the process dies
        assert release.step(db, rollout["id"], settings=settings) == "released"
    first_batch = _moved(session_factory, before)
    assert len(first_batch) == 4
    with session_factory() as db:
        since = dict(db.execute(select(Device.id, Device.effective_since)).all())
    assert fleet.advance(session_factory, rollout["id"]) == ["released", "waiting"]  # another process goes on
    moved = _moved(session_factory, before)
    assert len(moved) == 6
    with session_factory.begin() as db:  # the same wave released again: nothing moves
        campaign = db.get(Campaign, rollout["id"])
        assert campaign is not None
        cursor = campaign.release_cursor
        campaign.release_cursor = ""
        assert profile_release.release_batch(db, campaign, 1, 100, settings) == 0
        assert holds.release(db, settings, "pos", select(CampaignTarget.device_id).where(CampaignTarget.wave == 1)) == 0
        campaign.release_cursor = cursor
    with session_factory() as db:
        after = dict(db.execute(select(Device.id, Device.effective_since)).all())
    assert all(after[d] == since[d] for d in first_batch)  # the first batch moved once
    assert _moved(session_factory, before) == moved
    assert _campaign(session_factory, rollout["id"])["counts"]["pending"] == 6


def test_a_selector_change_holds_leavers_in_and_newcomers_out(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    ones = _seed(session_factory, settings, 10, "1")
    twos = _seed(session_factory, settings, 10, "2")
    roll(session_factory, settings, _pos("a"), None)
    before = hashes(session_factory)
    assert all(before[d] is not None for d in ones) and all(before[d] is None for d in twos)
    rollout = roll(session_factory, settings, _pos("a", "store=2"), {"wave_percent": 50})["rollout"]
    assert rollout["targeted"] == 20
    with session_factory() as db:  # the profile's members are still the store-1 devices, at version 1
        assert store.list_profiles(db)[0]["devices"] == 10
        # so are its devices in the compliance counts: the store-2 devices held out of it are not counted
        by_profile = compliance.summary(db, settings, by="profile")["groups"]
        assert [(g["key"], sum(g["states"].values())) for g in by_profile] == [("pos", 10)]
    fleet.advance(session_factory, rollout["id"])
    now = hashes(session_factory)
    moved = _moved(session_factory, before)
    assert len(moved) == 10
    assert all(now[d] is None for d in moved if d in ones)  # left the profile
    assert all(now[d] is not None for d in moved if d in twos)  # joined it at version 2
    # a leaver has nothing to comply with: it succeeds at the next sweep
    fleet.advance(session_factory, rollout["id"], now=utcnow() + timedelta(seconds=10))
    counts = _campaign(session_factory, rollout["id"])["counts"]
    assert counts["succeeded"] == len([d for d in moved if d in ones])


def test_a_new_version_supersedes_the_rollout(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, settings)
    roll(session_factory, settings, _pos("a"), None)
    first = roll(session_factory, settings, _pos("b"), {"wave_size": 10})["rollout"]
    fleet.advance(session_factory, first["id"])
    second = roll(session_factory, settings, _pos("c"), {"wave_size": 10})
    old = _campaign(session_factory, first["id"])
    assert (old["status"], old["reason"]) == ("cancelled", "superseded")
    assert second["rollout"]["targeted"] == 20 and second["rollout"]["profile"]["from_version"] == 2
    assert len(set(hashes(session_factory).values())) == 2  # half at version 1, half at 2: kept until their wave
    with session_factory.begin() as db:  # a rollback through the profile store: the loop sees it
        store.rollback(db, settings, "pos", 1, ACTOR)
    fleet.run_due(session_factory, settings)
    assert _campaign(session_factory, second["rollout"]["id"])["reason"] == "superseded"
    assert len(set(hashes(session_factory).values())) == 1
    with session_factory() as db:
        kinds = {c["id"]: c["kind"] for c in fleet.list_campaigns(db)}
    assert kinds == {first["id"]: "profile", second["rollout"]["id"]: "profile"}


BAD_ROLLOUTS = [
    ({}, "rollout"),
    ({"wave_size": 5, "wave_percent": 10}, "rollout"),
    ({"wave_size": 0}, "rollout.wave_size"),
    ({"wave_percent": 0}, "rollout.wave_percent"),
    ({"wave_percent": 101}, "rollout.wave_percent"),
    ({"wave_size": 5, "max_noncompliant_pct": -1}, "rollout.max_noncompliant_pct"),
    ({"wave_size": 5, "wave_interval_seconds": -1}, "rollout.wave_interval_seconds"),
    ({"wave_size": 5, "grace_seconds": 0}, "rollout.grace_seconds"),
    ({"wave_size": 5, "colour": 1}, "rollout.colour"),
    ([], "rollout"),
]


@pytest.mark.parametrize(("body", "field"), BAD_ROLLOUTS)
def test_bad_rollouts_name_their_field_and_write_nothing(
    body: Any, field: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_rollout(body)
    assert caught.value.field == field
    with pytest.raises(InvalidArgument), session_factory.begin() as db:
        profile_rollouts.apply(db, settings, _pos("a"), ACTOR, body)
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(ProfileVersion)) == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_step_takes_the_profiles_lock_before_its_campaign_row(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """An apply holds the profiles lock when it ends a rollout (then locks the campaign row): a step waiting
    for the profiles lock must not hold the row meanwhile, or the two deadlock."""
    _seed(session_factory, settings, 4)
    roll(session_factory, settings, _pos("a"), None)
    rollout = roll(session_factory, settings, _pos("b"), {"wave_size": 2})["rollout"]
    outcome: list[str] = []
    with session_factory() as holder:
        holder.begin()
        xact_lock(holder, effective.LOCK)  # as an apply does first
        stepper = threading.Thread(target=lambda: outcome.extend(fleet.advance(session_factory, rollout["id"])))
        stepper.start()
        time.sleep(0.5)  # the step is now waiting for the profiles lock
        with session_factory() as other, other.begin():  # its campaign row is free: the apply could take it
            row = other.execute(
                select(Campaign.id).where(Campaign.id == rollout["id"]).with_for_update(nowait=True)
            ).scalar_one()
            assert row == rollout["id"]
        assert outcome == []
        holder.rollback()
    stepper.join(timeout=30)
    assert outcome[0] == "released"


def test_a_device_revoked_after_its_wave_is_cancelled_and_one_enrolled_again_is_no_longer_held(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    ids, before, rollout, first = _first_wave_of_b(session_factory, settings, 15)
    report(session_factory, settings, first[1:], "compliant")
    with session_factory.begin() as db:  # the one that never reported goes: no outcome to judge, no failure
        revoke_device(db, first[0])

    # a device of a later wave, enrolled again (a new generation) while held: it is no rollout's any more
    # and follows the profile's current version, like any device enrolled today
    with session_factory.begin() as db:
        token, _ = create_enrollment_token(db, uses=1, labels={"store": "1"})  # back in the same store
    last = max(d for d in ids if d not in first)
    with session_factory.begin() as db:
        revoke_device(db, last)
    with session_factory.begin() as db:
        enroll_device(db, enrollment_secret=token, device_id=last)
    fresh(session_factory, settings)
    with session_factory() as db:
        versions = db.execute(select(DeviceProfile.version).where(DeviceProfile.device_id == last)).scalars().all()
    assert versions == [None]
    assert hashes(session_factory)[last] == hashes(session_factory)[first[1]]  # the new version's hash

    later = utcnow() + timedelta(seconds=61)
    assert fleet.advance(session_factory, rollout["id"], now=later)[0] == "released"  # no halt
    counts = _campaign(session_factory, rollout["id"])["counts"]
    assert (counts["succeeded"], counts["failed"], counts["cancelled"]) == (4, 0, 2)  # the two who went


def test_an_operators_campaign_cannot_take_a_rollouts_name(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, settings, 4)
    with session_factory.begin() as db, pytest.raises(InvalidArgument, match="profile:") as refused:
        fleet.create_campaign(db, settings, idempotency_key="profile:pos:2", action="ping", selector="store=1")
    assert refused.value.field == "Idempotency-Key"
    roll(session_factory, settings, _pos("a"), None)  # version 2 can still roll out under its own name
    rollout = roll(session_factory, settings, _pos("b"), {"wave_size": 2})["rollout"]
    with session_factory() as db:
        assert db.get(Campaign, rollout["id"]).idempotency_key == "profile:pos:2"


def test_a_rollout_moves_from_the_version_current_when_it_holds_the_lock(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """Two applies of one profile at once: the second waits for the first's lock, and its rollout moves from
    the version the first stored, not the one the second read before waiting (PostgreSQL: it read v1)."""
    _seed(session_factory, settings, 4)
    roll(session_factory, settings, _pos("a"), None)  # version 1
    answers: list[dict[str, Any]] = []
    with session_factory() as first:
        first.begin()
        profile_rollouts.apply(first, settings, _pos("b"), ACTOR)  # version 2, holding the profiles lock
        second = threading.Thread(
            target=lambda: answers.append(roll(session_factory, settings, _pos("c"), {"wave_size": 2}))
        )
        second.start()
        time.sleep(0.5)  # the second apply is now waiting for the lock
        first.commit()
    second.join(timeout=30)
    assert answers[0]["version"] == 3
    with session_factory() as db:
        moved_from = db.execute(
            select(Campaign.from_version).where(Campaign.id == answers[0]["rollout"]["id"])
        ).scalar()
    assert moved_from == 2
