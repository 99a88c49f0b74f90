"""Campaign lifecycle on both databases: snapshot, waves by time and success, halt, pause/resume,
cancel, completion, a worker restarted mid-wave, two workers, idempotent creation under concurrency."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns as fleet
from core.base.errors import Conflict, InvalidArgument
from core.base.settings import Settings
from core.campaigns import records as campaigns
from core.campaigns import release
from core.commands import dispatches
from core.commands.dispatches import IdempotencyMismatch
from core.enrollment import enroll as enrollment
from core.events import webhooks
from core.models import AuditEvent, Campaign, CampaignTarget, Device, FcmDispatch, WebhookOutbox
from core.storage.types import utcnow
from tests.support.databases import run_together
from tests.support.fleet import ack_all, seed_many


def _create(factory: sessionmaker[Session], settings: Settings, key: str = "k1", **kw: object) -> dict:
    kw.setdefault("action", "sync")
    kw.setdefault("selector", "all")
    with factory.begin() as db:
        created, campaign = fleet.create_campaign(db, settings, idempotency_key=key, **kw)  # type: ignore[arg-type]
    assert created
    return campaign


def _counts(factory: sessionmaker[Session], campaign_id: str) -> dict:
    with factory() as db:
        return fleet.get_campaign(db, campaign_id)


def _seed(factory: sessionmaker[Session], n: int, **kw: object) -> list[str]:
    with factory.begin() as db:
        return seed_many(db, n, **kw)  # type: ignore[arg-type]


def test_without_waves_everything_is_released_once_and_completes(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 25, labels={"store": "42"})
    _seed(session_factory, 5, prefix="x")
    campaign = _create(session_factory, settings, selector="store=42", action="lock", payload={"message": "v1"})
    assert campaign["targeted"] == 25 and campaign["counts"]["queued"] == 25
    # creation writes only the snapshot
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 0
    assert release.advance(session_factory, campaign["id"])[0] == "released"
    release.advance(session_factory, campaign["id"])  # a second worker round changes nothing
    with session_factory() as db:
        rows = db.execute(select(FcmDispatch).where(FcmDispatch.campaign_id == campaign["id"])).scalars().all()
        assert len(rows) == 25
        assert {r.request_id for r in rows} == {f"{campaign['id']}:d{i:06d}" for i in range(25)}
        assert all(r.payload == {"message": "v1"} and r.expires_at is not None for r in rows)
        # an ordinary dispatch: it is in the device's pending list
        assert dispatches.pending_commands(db, "d000003")[0]["request_id"] == f"{campaign['id']}:d000003"
    counts = _counts(session_factory, campaign["id"])["counts"]
    assert counts["pending"] == 25 and counts["queued"] == 0
    ack_all(session_factory, campaign["id"], limit=20)
    ack_all(session_factory, campaign["id"], status="failed")
    release.run_due(session_factory, settings)
    done = _counts(session_factory, campaign["id"])
    assert done["status"] == "completed" and done["finished_at"] is not None
    with session_factory.begin() as db, pytest.raises(Conflict):
        fleet.pause(db, campaign["id"])  # a completed campaign is final, as for resume
    assert done["counts"]["acked"] == 20 and done["counts"]["failed"] == 5
    assert sum(done["counts"][s] for s in ("queued", "pending", "acked", "failed", "expired", "cancelled")) == 25
    # frozen: later changes to the dispatches no longer move the counts
    with session_factory.begin() as db:
        db.execute(update(FcmDispatch).values(status="expired"))
    assert _counts(session_factory, campaign["id"])["counts"]["acked"] == 20


def test_snapshot_excludes_devices_enrolled_later_and_revoked_ones_get_no_command(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 10)
    campaign = _create(session_factory, settings, waves={"size": 5})
    _seed(session_factory, 3, prefix="late")
    with session_factory.begin() as db:
        wave2 = db.scalars(
            select(CampaignTarget.device_id).where(
                CampaignTarget.campaign_id == campaign["id"], CampaignTarget.wave == 2
            )
        ).first()
        enrollment.revoke_device(db, wave2)
    release.run_due(session_factory, settings)  # no interval: both waves go in one round
    counts = _counts(session_factory, campaign["id"])["counts"]
    assert counts["targeted"] == 10 and counts["pending"] == 9 and counts["cancelled"] == 1
    with session_factory() as db:
        assert db.scalar(select(func.count()).where(FcmDispatch.device_id.like("late%"))) == 0


def test_waves_by_percent_wait_for_the_interval(
    session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # waves hash (campaign id, device id): a fixed id makes the fairness check below deterministic (with a
    # random one, wave 1 is exactly d0-d4 once in C(20, 5) = 15,504 runs)
    monkeypatch.setattr(campaigns, "new_campaign_id", lambda: "cmp_01JEZ5W8Y6K3Q9T2R4N7M0B1C8")
    _seed(session_factory, 20)
    campaign = _create(session_factory, settings, waves={"percent": 25, "interval_seconds": 600})
    assert campaign["waves"]["size"] == 5 and campaign["waves"]["count"] == 4
    now = utcnow()
    release.advance(session_factory, campaign["id"], now)
    release.advance(session_factory, campaign["id"], now + timedelta(seconds=599))
    assert _counts(session_factory, campaign["id"])["counts"]["pending"] == 5
    release.advance(session_factory, campaign["id"], now + timedelta(seconds=601))
    shown = _counts(session_factory, campaign["id"])
    assert shown["counts"]["pending"] == 10 and shown["waves"]["released"] == 2
    # waves come from a hash of (campaign, device), not id order
    with session_factory() as db:
        first = db.scalars(
            select(CampaignTarget.device_id)
            .where(CampaignTarget.campaign_id == campaign["id"], CampaignTarget.wave == 1)
            .order_by(CampaignTarget.device_id)
        ).all()
    assert first != [f"d{i:06d}" for i in range(5)]


def test_a_wave_by_percent_rounds_up(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 10)
    campaign = _create(session_factory, settings, waves={"percent": 15, "interval_seconds": 600})  # 1.5: 2 each
    assert (campaign["waves"]["size"], campaign["waves"]["count"]) == (2, 5)
    release.advance(session_factory, campaign["id"])
    assert _counts(session_factory, campaign["id"])["counts"]["pending"] == 2


def test_max_failure_halts_only_above_the_share(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 10)
    campaign = _create(session_factory, settings, waves={"size": 5, "interval_seconds": 60, "max_failure_pct": 20})
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"], status="failed", limit=1)  # 1 of 5 = 20 %: not above 20 %
    ack_all(session_factory, campaign["id"])
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=61))
    shown = _counts(session_factory, campaign["id"])
    assert (shown["status"], shown["reason"], shown["waves"]["released"]) == ("running", None, 2)
    assert (shown["counts"]["failed"], shown["counts"]["pending"], shown["counts"]["queued"]) == (1, 5, 0)


def test_min_success_gates_the_next_wave_and_halts_when_unmet(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 10)
    campaign = _create(session_factory, settings, waves={"size": 4, "min_success_pct": 75})
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"], limit=2)
    release.run_due(session_factory, settings)
    waiting = _counts(session_factory, campaign["id"])
    assert (waiting["status"], waiting["reason"], waiting["waves"]["released"]) == ("running", None, 1)  # 50 % < 75 %
    ack_all(session_factory, campaign["id"], status="failed")
    release.run_due(session_factory, settings)
    halted = _counts(session_factory, campaign["id"])
    assert halted["status"] == "halted" and halted["reason"] == "min_success_unmet"
    with session_factory.begin() as db, pytest.raises(Conflict):
        fleet.resume(db, campaign["id"])
    with session_factory.begin() as db:
        fleet.resume(db, campaign["id"], min_success_pct=50)
    release.run_due(session_factory, settings)
    assert _counts(session_factory, campaign["id"])["waves"]["released"] == 2


def test_max_failure_halts_then_ignore_failures_resumes(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 10)
    campaign = _create(session_factory, settings, waves={"size": 5, "interval_seconds": 60, "max_failure_pct": 20})
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"], status="failed", limit=2)
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=61))
    halted = _counts(session_factory, campaign["id"])
    assert (halted["status"], halted["reason"], halted["counts"]["queued"]) == ("halted", "max_failure", 5)
    with session_factory.begin() as db:
        assert fleet.resume(db, campaign["id"], ignore_failures=True)["status"] == "running"
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=61))
    assert _counts(session_factory, campaign["id"])["counts"]["queued"] == 0


def test_pause_stops_releases_and_resume_goes_on(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 6)
    campaign = _create(session_factory, settings, waves={"size": 2, "interval_seconds": 60})
    release.run_due(session_factory, settings)
    with session_factory.begin() as db:
        fleet.pause(db, campaign["id"])
    with session_factory.begin() as db:
        assert fleet.pause(db, campaign["id"])["status"] == "paused"  # repeating is fine
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=61))
    assert _counts(session_factory, campaign["id"])["counts"]["queued"] == 4
    with session_factory.begin() as db:
        fleet.resume(db, campaign["id"])
    release.run_due(session_factory, settings, utcnow() + timedelta(seconds=61))
    assert _counts(session_factory, campaign["id"])["counts"]["queued"] == 2


def test_cancel_cancels_queued_targets(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 6)
    campaign = _create(session_factory, settings, waves={"size": 3})
    with session_factory.begin() as db:
        shown = fleet.cancel(db, campaign["id"])
    assert shown["status"] == "cancelled" and shown["counts"]["cancelled"] == 6
    with session_factory.begin() as db:
        assert fleet.cancel(db, campaign["id"])["status"] == "cancelled"
    with session_factory.begin() as db, pytest.raises(Conflict):
        fleet.resume(db, campaign["id"])
    with session_factory.begin() as db, pytest.raises(Conflict):
        fleet.pause(db, campaign["id"])  # as resume: a cancelled campaign never becomes paused, then running
    release.run_due(session_factory, settings)
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 0
    assert _counts(session_factory, campaign["id"])["status"] == "cancelled"


def test_a_wave_interrupted_between_batches_is_finished_exactly_once(
    session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(session_factory, 25)
    campaign = _create(session_factory, settings)
    monkeypatch.setattr(release, "RELEASE_BATCH", 10)
    with session_factory.begin() as db:  # one batch committed, then the worker "dies"
        assert release.step(db, campaign["id"]) == "released"
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 10
    assert release.advance(session_factory, campaign["id"]).count("released") == 2  # a new worker goes on
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 25
        assert db.scalar(select(Campaign.waves_released)) == 1


def test_two_workers_release_each_wave_once(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 30)
    campaign = _create(session_factory, settings, waves={"size": 10, "interval_seconds": 60})
    for i in range(3):
        later = utcnow() + timedelta(seconds=61 * i + 1)
        run_together(2, lambda _i, later=later: release.run_due(session_factory, settings, later))
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 30
        assert db.scalar(select(Campaign.waves_released)) == 3
    assert _counts(session_factory, campaign["id"])["counts"]["pending"] == 30


def test_fifty_identical_requests_make_one_campaign(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 20)

    def create(_i: int) -> tuple[bool, str]:
        with session_factory.begin() as db:
            created, campaign = fleet.create_campaign(
                db, settings, idempotency_key="same", action="ping", selector="all", waves={"size": 5}
            )
        return created, campaign["id"]

    results = run_together(50, create)
    assert sum(created for created, _ in results) == 1
    assert len({cid for _, cid in results}) == 1
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(Campaign)) == 1
        assert db.scalar(select(func.count()).select_from(CampaignTarget)) == 20
    with session_factory.begin() as db, pytest.raises(IdempotencyMismatch):
        fleet.create_campaign(
            db, settings, idempotency_key="same", action="ring", payload={"seconds": 5}, selector="all"
        )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"selector": ""}, "write `all`"),
        ({"selector": None, "device_ids": []}, "device_ids is empty"),
        ({"selector": "store=nowhere"}, "no device matches"),
        ({"selector": "a=("}, "invalid selector at position 2"),
        ({"waves": {"percent": 0}}, "above 0 %"),
        ({"waves": {"interval_seconds": 60}}, "exactly one of size or percent"),
        ({"waves": {"size": 0}}, "at least 1"),
        ({"selector": None, "device_ids": [f"x{i}" for i in range(10_001)]}, "at most 10,000"),
        ({"expires_in_seconds": 5}, "60 s to 30 days"),
        ({"action": "explode"}, "unknown action"),
    ],
)
def test_bad_campaigns_are_refused_and_write_nothing(
    session_factory: sessionmaker[Session], settings: Settings, kw: dict, message: str
) -> None:
    _seed(session_factory, 3)
    args = {"action": "sync", "selector": "all"} | kw
    with pytest.raises(InvalidArgument) as err, session_factory.begin() as db:
        fleet.create_campaign(db, settings, idempotency_key="bad", **args)
    assert message in err.value.message
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(Campaign)) == 0


def test_drill_down_pages_by_device(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 12)
    campaign = _create(session_factory, settings)
    release.run_due(session_factory, settings)
    ack_all(session_factory, campaign["id"], status="failed", limit=7)
    seen: list[str] = []
    after = None
    with session_factory() as db:
        while True:
            page = fleet.campaign_devices(db, campaign["id"], status="failed", limit=3, after=after)
            seen += [row["device_id"] for row in page]
            if len(page) < 3:
                break
            after = page[-1]["device_id"]
        assert len(seen) == 7 == len(set(seen)) and seen == sorted(seen)
        assert len(fleet.campaign_devices(db, campaign["id"], status="pending")) == 5
    assert _counts(session_factory, campaign["id"])["counts"]["failed"] == 7


def test_per_device_commands_refuse_campaign_keys(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed(session_factory, 1)
    with session_factory.begin() as db, pytest.raises(InvalidArgument):
        dispatches.create_command(db, settings, request_id="cmp_x", device_id="d000000", action="ping")


def test_plain_commands_are_claimed_before_campaign_commands(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from core.commands.push import DeliveryWorker

    _seed(session_factory, 20)
    campaign = _create(session_factory, settings)
    release.run_due(session_factory, settings)
    with session_factory.begin() as db:
        dispatches.create_command(db, settings, request_id="urgent-lock", device_id="d000019", action="lock")
        db.execute(update(Device).values(fcm_token="tok"))
    worker = DeliveryWorker(session_factory, settings.with_overrides(delivery_batch_size=1), None)
    try:
        (claim,) = worker.claim()
    finally:
        worker.close()
    assert claim.request_id == "urgent-lock"  # though the campaign's 20 commands were queued before it
    assert _counts(session_factory, campaign["id"])["counts"]["pending"] == 20


def test_cleanup_keeps_commands_of_unfinished_campaigns_and_ended_campaigns_for_their_period(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from core.ops import retention as db_utils

    _seed(session_factory, 4)
    running = _create(session_factory, settings, key="running", waves={"size": 2, "interval_seconds": 3600})
    ended = _create(session_factory, settings, key="ended")
    release.run_due(session_factory, settings)
    ack_all(session_factory, running["id"])
    ack_all(session_factory, ended["id"])
    release.run_due(session_factory, settings)
    assert _counts(session_factory, ended["id"])["status"] == "completed"
    with session_factory.begin() as db:
        result = db_utils.cleanup_old_fcm_dispatches(db, retention_days=0)
    assert result["deleted"] == 4  # the ended campaign's; the running one's 2 acked commands stay
    with session_factory() as db:
        left = db.scalars(select(FcmDispatch.campaign_id)).all()
    assert left == [running["id"]] * 2
    with session_factory.begin() as db:
        assert db_utils.cleanup_old_campaigns(db)["deleted"] == 0  # ended just now: kept 365 days
    with session_factory.begin() as db:
        assert db_utils.cleanup_old_campaigns(db, retention_days=0)["deleted"] == 1
    with session_factory() as db:
        assert db.scalars(select(Campaign.id)).all() == [running["id"]]
        assert db.scalar(select(func.count()).select_from(CampaignTarget)) == 4


def test_revocation_during_a_campaign_cancels_its_command_and_queued_target_at_once(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 6)
    campaign = _create(session_factory, settings, waves={"size": 3, "interval_seconds": 3600})
    release.run_due(session_factory, settings)
    with session_factory() as db:
        released = db.scalars(select(FcmDispatch.device_id).order_by(FcmDispatch.device_id)).all()
        queued = db.scalars(
            select(CampaignTarget.device_id)
            .where(CampaignTarget.device_id.not_in(released))
            .order_by(CampaignTarget.device_id)
        ).all()
    with session_factory.begin() as db:
        enrollment.revoke_device(db, released[0])
        enrollment.revoke_device(db, queued[0])
    with session_factory() as db:
        assert dispatches.pending_commands(db, released[0]) == []
        states = {d: st for d, st in db.execute(select(CampaignTarget.device_id, CampaignTarget.state))}
        assert states[queued[0]] == "cancelled" and states[released[0]] == "queued"  # released: its command says
    counts = _counts(session_factory, campaign["id"])["counts"]
    assert (counts["cancelled"], counts["pending"], counts["queued"]) == (2, 2, 2)
    assert sum(counts[s] for s in ("queued", "pending", "acked", "failed", "expired", "cancelled")) == 6
    release.run_due(session_factory, settings, utcnow() + timedelta(hours=2))
    counts = _counts(session_factory, campaign["id"])["counts"]
    assert (counts["cancelled"], counts["pending"], counts["queued"]) == (2, 4, 0)


def test_a_re_enrolled_id_is_not_the_snapshot_target(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _seed(session_factory, 2)
    campaign = _create(session_factory, settings, waves={"size": 1, "interval_seconds": 3600})
    with session_factory() as db:
        second = db.scalar(select(CampaignTarget.device_id).where(CampaignTarget.wave == 2))
    # another generation of the id by the time its wave comes (the release's generation join alone, as when a
    # revocation and re-enrollment raced the snapshot; an ordinary revocation cancels the target first)
    with session_factory.begin() as db:
        db.execute(update(Device).where(Device.id == second).values(generation=Device.generation + 1))
    release.run_due(session_factory, settings)
    release.run_due(session_factory, settings, utcnow() + timedelta(hours=2))
    with session_factory() as db:
        assert db.scalar(select(func.count()).where(FcmDispatch.device_id == second)) == 0
    assert _counts(session_factory, campaign["id"])["counts"]["cancelled"] == 1


def test_campaign_commands_expire_after_their_own_lifetime_and_count_as_failures(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from core.commands.push import sweep_expired

    _seed(session_factory, 4)
    campaign = _create(
        session_factory,
        settings,
        expires_in_seconds=60,
        waves={"size": 2, "interval_seconds": 3600, "max_failure_pct": 50},
    )
    release.run_due(session_factory, settings)
    with session_factory.begin() as db:
        dispatches.create_command(db, settings, request_id="plain-1", device_id="d000003", action="ping")
    assert sweep_expired(session_factory, settings, utcnow() + timedelta(seconds=30)) == 0
    assert sweep_expired(session_factory, settings, utcnow() + timedelta(seconds=61)) == 2  # not the plain one
    with session_factory() as db:
        assert db.scalar(select(FcmDispatch.status).where(FcmDispatch.request_id == "plain-1")) == "pending"
    release.run_due(session_factory, settings)
    shown = _counts(session_factory, campaign["id"])
    assert shown["counts"]["expired"] == 2 and (shown["status"], shown["reason"]) == ("halted", "max_failure")


def test_halts_and_completions_are_announced_and_audited(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """campaign.halted / campaign.completed go to subscribed webhooks; a halt is audited as system:worker;
    a failed campaign command sends no command.failed (the campaign reports for it)."""
    with session_factory.begin() as db:
        webhooks.add_endpoint(
            db, url="https://hooks.example.com/c", events=["campaign.halted", "campaign.completed", "command.failed"]
        )
    _seed(session_factory, 4)
    campaign = _create(session_factory, settings, waves={"size": 2, "max_failure_pct": 10})
    release.run_due(session_factory, settings)
    with session_factory.begin() as db:
        request_id = db.scalars(select(FcmDispatch.request_id).where(FcmDispatch.campaign_id == campaign["id"])).first()
        device_id = db.scalars(select(FcmDispatch.device_id).where(FcmDispatch.request_id == request_id)).one()
        dispatches.ack_command(db, device_id=device_id, request_id=request_id, status="failed")
    release.run_due(session_factory, settings)
    assert _counts(session_factory, campaign["id"])["status"] == "halted"
    with session_factory.begin() as db:
        fleet.cancel(db, campaign["id"])  # a cancel ends it without "completed"
        events = db.scalars(select(WebhookOutbox.event_type).order_by(WebhookOutbox.id)).all()
        body = json.loads(db.scalars(select(WebhookOutbox.body)).first() or "{}")
        halts = db.execute(select(AuditEvent.actor, AuditEvent.action).where(AuditEvent.target == campaign["id"])).all()
    assert events == ["campaign.halted"]
    assert body["data"]["counts"]["targeted"] == 4 and body["data"]["counts"]["failed"] == 1
    assert body["data"]["reason"] == "max_failure" and "payload" not in body["data"]
    assert halts == [("system:worker", "campaign.halt")]
    late = _seed(session_factory, 2, prefix="late")
    done = _create(session_factory, settings, key="done-1", selector=None, device_ids=late)
    release.run_due(session_factory, settings)
    ack_all(session_factory, done["id"])
    release.run_due(session_factory, settings)
    with session_factory.begin() as db:
        assert db.scalars(select(WebhookOutbox.event_type).order_by(WebhookOutbox.id)).all()[-1] == "campaign.completed"


def test_a_campaign_over_the_cap_is_refused_before_anything_is_written(
    session_factory: sessionmaker[Session], settings: Settings, engine: Engine
) -> None:
    """Issue #21: the cap was checked after the snapshot (300,011 devices, cap 3: 12.3 s of work per refusal)."""
    _seed(session_factory, 5)
    capped = settings.with_overrides(campaign_max_targets=3)
    written: list[str] = []

    def watch(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            written.append(statement)

    event.listen(engine, "before_cursor_execute", watch)
    try:
        with pytest.raises(InvalidArgument, match=r"at most 3 \(NEXMDM_CAMPAIGN_MAX_TARGETS\)"):
            _create(session_factory, capped)
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert written == []
    assert _create(session_factory, settings.with_overrides(campaign_max_targets=5), key="k2")["targeted"] == 5
