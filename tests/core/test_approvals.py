"""Approvals of destructive actions, on SQLite and PostgreSQL: nothing is sent before approval + delay."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core import approvals
from core import campaigns as fleet
from core.approvals.decisions import release
from core.base.clock import utcnow
from core.base.errors import Conflict, NexMDMError
from core.base.settings import Settings
from core.commands import dispatches
from core.commands.destructive import ApprovalRequired
from core.commands.push import DeliveryWorker, client_from_settings, queue_stats
from core.devices.labels import label_device
from core.events import webhooks
from core.events.audit import Actor
from core.models import Approval, AuditEvent, Campaign, Device, FcmDispatch, WebhookOutbox
from core.ops.maintenance import Maintenance
from core.ops.retention import cleanup_old_approvals
from core.storage.engine import make_session_factory
from tests.support.approvals import ALICE, BOB, CAROL, ask_wipe, audit_rows, dispatch_count, wipe_settings
from tests.support.databases import add_device, run_together
from tests.support.fakes.fcm import FakeFcm, write_service_account

DELAY = 600


#: a wipe's payload names its reason (its schema, docs/actions.md)
REASON = {"reason": "stolen"}


@pytest.fixture
def wipe(settings: Settings) -> Settings:
    return wipe_settings(settings)


@pytest.fixture
def worker(
    session_factory: sessionmaker[Session], wipe: Settings, fake_fcm: FakeFcm, tmp_path: Path
) -> Iterator[DeliveryWorker]:
    key = write_service_account(tmp_path / "service-account.json", f"{fake_fcm.url}/token")
    fcm = wipe.with_overrides(fcm_credentials=key, fcm_endpoint=fake_fcm.url)
    factory = make_session_factory(session_factory.kw["bind"], fcm)
    w = DeliveryWorker(factory, fcm, client_from_settings(fcm), rng=lambda: 0.5)
    yield w
    w.close()


def _state(factory: sessionmaker[Session], approval_id: str) -> str:
    with factory() as db:
        return str(db.execute(select(Approval.state).where(Approval.id == approval_id)).scalar_one())


def test_a_wipe_reaches_neither_the_queue_nor_fcm_before_approval_and_delay(
    session_factory: sessionmaker[Session], wipe: Settings, worker: DeliveryWorker, fake_fcm: FakeFcm
) -> None:
    add_device(session_factory, "dev_001", fcm_token="fcm-token-1")
    t0 = utcnow()
    approval_id = ask_wipe(session_factory, wipe, now=t0)

    def nothing_sent() -> None:
        assert dispatch_count(session_factory) == 0
        with session_factory() as db:
            assert queue_stats(db)["depth"] == 0
            assert dispatches.pending_commands(db, "dev_001") == []
        assert worker.run_once() == []
        assert fake_fcm.messages == []

    nothing_sent()
    assert approvals.release_due(session_factory, wipe, now=t0 + timedelta(hours=23)) == 0
    nothing_sent()
    approved_at = t0 + timedelta(minutes=5)
    with session_factory.begin() as db:
        item = approvals.approve(db, wipe, approval_id, actor=BOB, now=approved_at)
    assert item["release_at"] == approved_at + timedelta(seconds=DELAY)
    for seconds in (0, 1, DELAY - 1):  # the clock moves; the sweep releases nothing during the delay
        assert approvals.release_due(session_factory, wipe, now=approved_at + timedelta(seconds=seconds)) == 0
        nothing_sent()
    assert approvals.release_due(session_factory, wipe, now=approved_at + timedelta(seconds=DELAY)) == 1
    assert approvals.release_due(session_factory, wipe, now=approved_at + timedelta(seconds=DELAY)) == 0
    assert worker.run_once() == ["sent"]
    assert [m.body["message"]["data"] for m in fake_fcm.messages] == [{"request_id": "wipe-1", "action": "wipe"}]
    assert _state(session_factory, approval_id) == "released"
    with session_factory() as db:
        assert dispatches.get_dispatch(db, "wipe-1")["payload"] == {"reason": "stolen"}
    # every step with both actors: the command's creation is the requester's, approved by the second admin
    assert audit_rows(session_factory, approval_id) == [
        ("approval.request", ALICE.name, "success"),
        ("approval.approve", BOB.name, "success"),
        ("approval.release", "system:worker", "success"),
    ]
    with session_factory() as db:
        created = dispatches.list_dispatches(db)[0]
    assert created["request_id"] == "wipe-1"


def test_a_cancel_during_the_delay_keeps_it_off_the_queue(
    session_factory: sessionmaker[Session], wipe: Settings, worker: DeliveryWorker, fake_fcm: FakeFcm
) -> None:
    add_device(session_factory, "dev_001", fcm_token="fcm-token-1")
    approval_id = ask_wipe(session_factory, wipe)
    with session_factory.begin() as db:
        approvals.approve(db, wipe, approval_id, actor=BOB)
    with session_factory.begin() as db:
        assert approvals.cancel(db, approval_id, actor=CAROL)["state"] == "cancelled"
    assert approvals.release_due(session_factory, wipe, now=utcnow() + timedelta(days=2)) == 0
    assert worker.run_once() == [] and fake_fcm.messages == [] and dispatch_count(session_factory) == 0
    with session_factory.begin() as db, pytest.raises(approvals.ApprovalClosed):
        approvals.cancel(db, approval_id, actor=CAROL)


def test_no_path_sends_a_destructive_action_without_approval(
    session_factory: sessionmaker[Session], wipe: Settings
) -> None:
    add_device(session_factory, "dev_001")
    with session_factory.begin() as db, pytest.raises(ApprovalRequired):
        dispatches.create_command(
            db, wipe, request_id="w", device_id="dev_001", action="wipe", payload=REASON, actor=ALICE
        )
    with session_factory.begin() as db, pytest.raises(ApprovalRequired):
        fleet.create_campaign(db, wipe, idempotency_key="k", action="wipe", payload=REASON, selector="all", actor=ALICE)
    with session_factory.begin() as db, pytest.raises(NexMDMError, match="not destructive"):
        approvals.request_command(
            db, wipe, request_id="r", device_id="dev_001", action="ring", payload={"seconds": 3}, actor=ALICE
        )
    assert dispatch_count(session_factory) == 0


def test_the_requester_cannot_approve_and_the_refusal_is_audited(
    session_factory: sessionmaker[Session], wipe: Settings
) -> None:
    add_device(session_factory, "dev_001")
    approval_id = ask_wipe(session_factory, wipe)
    with session_factory.begin() as db, pytest.raises(approvals.SelfApprovalRefused):
        approvals.approve(db, wipe, approval_id, actor=ALICE)
    # the caller committed the refusal's row; the approval did not move
    assert _state(session_factory, approval_id) == "awaiting_approval"
    assert audit_rows(session_factory, approval_id)[-1] == ("approval.approve", ALICE.name, "denied")
    lab = wipe.with_overrides(allow_self_approval=True)
    with session_factory.begin() as db:
        assert approvals.approve(db, lab, approval_id, actor=ALICE)["decided_by"] == ALICE.name


def test_a_closed_request_cannot_be_approved_and_the_refusal_is_audited(
    session_factory: sessionmaker[Session], wipe: Settings
) -> None:
    add_device(session_factory, "dev_001")
    approval_id = ask_wipe(session_factory, wipe)
    with session_factory.begin() as db:
        approvals.deny(db, approval_id, actor=BOB)
    with session_factory.begin() as db, pytest.raises(approvals.ApprovalClosed, match="denied"):
        approvals.approve(db, wipe, approval_id, actor=BOB)
    assert [row[2] for row in audit_rows(session_factory, approval_id)] == ["success", "success", "denied"]
    assert _state(session_factory, approval_id) == "denied"


def test_an_undecided_request_expires_after_a_day(session_factory: sessionmaker[Session], wipe: Settings) -> None:
    add_device(session_factory, "dev_001")
    t0 = utcnow()
    approval_id = ask_wipe(session_factory, wipe, now=t0)
    assert approvals.expire_due(session_factory, now=t0 + timedelta(hours=23, minutes=59)) == 0
    # past its expiry but before the sweep: an approval is refused as expired all the same
    with session_factory.begin() as db, pytest.raises(approvals.ApprovalClosed, match="expired"):
        approvals.approve(db, wipe, approval_id, actor=BOB, now=t0 + timedelta(hours=24))
    assert approvals.expire_due(session_factory, now=t0 + timedelta(hours=24)) == 1
    assert _state(session_factory, approval_id) == "expired"
    assert audit_rows(session_factory, approval_id)[-1] == ("approval.expire", "system:worker", "success")


def test_a_destructive_campaign_waits_in_its_own_status(session_factory: sessionmaker[Session], wipe: Settings) -> None:
    for i in range(3):
        add_device(session_factory, f"dev_{i:03d}")
    with session_factory.begin() as db:
        created, item = approvals.request_campaign(
            db, wipe, idempotency_key="wipe-all", action="wipe", selector="all", payload={"reason": "x"}, actor=ALICE
        )
    assert created and item["kind"] == "campaign"
    campaign_id = item["target_id"]
    with session_factory.begin() as db:  # the same key again: the same approval
        again, same = approvals.request_campaign(
            db, wipe, idempotency_key="wipe-all", action="wipe", selector="all", payload={"reason": "x"}, actor=ALICE
        )
    assert (again, same["id"]) == (False, item["id"])
    assert fleet.run_due(session_factory, wipe) == 0
    with session_factory.begin() as db:
        assert fleet.get_campaign(db, campaign_id)["status"] == "awaiting_approval"
        for change in (fleet.pause, fleet.resume):
            with pytest.raises(Conflict, match="awaiting approval"):
                change(db, campaign_id)
    now = utcnow()
    with session_factory.begin() as db:
        approvals.approve(db, wipe, item["id"], actor=BOB, now=now)
    assert fleet.run_due(session_factory, wipe) == 0 and dispatch_count(session_factory) == 0
    assert approvals.release_due(session_factory, wipe, now=now + timedelta(seconds=DELAY)) == 1
    assert fleet.run_due(session_factory, wipe) == 1 and dispatch_count(session_factory) == 3


def test_a_denied_campaign_is_cancelled_and_webhooks_announce_each_step(
    session_factory: sessionmaker[Session], wipe: Settings
) -> None:
    add_device(session_factory, "dev_001")
    with session_factory.begin() as db:
        webhooks.add_endpoint(
            db,
            url="https://hooks.example.com/mdm",
            events=["approval.requested", "approval.approved", "approval.denied"],
        )
        _, item = approvals.request_campaign(
            db, wipe, idempotency_key="k", action="wipe", payload=REASON, selector="all", actor=ALICE
        )
    with session_factory.begin() as db:
        approvals.deny(db, item["id"], actor=BOB)
    with session_factory() as db:
        campaign = db.get(Campaign, item["target_id"])
        assert campaign is not None and (campaign.status, campaign.reason) == ("cancelled", "approval_denied")
        bodies = [json.loads(b) for b in db.execute(select(WebhookOutbox.body).order_by(WebhookOutbox.id)).scalars()]
    assert [b["type"] for b in bodies] == ["approval.requested", "approval.denied"]
    assert bodies[1]["data"]["requested_by"] == ALICE.name and bodies[1]["data"]["decided_by"] == BOB.name


def test_a_release_to_a_device_revoked_meanwhile_sends_nothing(
    session_factory: sessionmaker[Session], wipe: Settings
) -> None:
    add_device(session_factory, "dev_001")
    approval_id = ask_wipe(session_factory, wipe)
    now = utcnow()
    with session_factory.begin() as db:
        approvals.approve(db, wipe, approval_id, actor=BOB, now=now)
        db.get_one(Device, "dev_001").revoked_at = now
    assert approvals.release_due(session_factory, wipe, now=now + timedelta(seconds=DELAY)) == 0
    assert _state(session_factory, approval_id) == "cancelled" and dispatch_count(session_factory) == 0


def test_a_release_to_a_device_that_left_the_requesters_scope_sends_nothing(
    session_factory: sessionmaker[Session], wipe: Settings
) -> None:
    """A wipe asked for by a key scoped to store 42: released to the device still in store 42, not to the one
    an unscoped admin moved to store 7 meanwhile (its requester could not have asked for it then)."""
    scoped = Actor("key:alice42", "127.0.0.1", {"scope": "store=42"})
    asked = {}
    for device_id in ("dev_001", "dev_002"):
        add_device(session_factory, device_id)
        with session_factory.begin() as db:
            label_device(db, device_id, {"store": "42"}, [])
        asked[device_id] = ask_wipe(
            session_factory, wipe, request_id=f"wipe-{device_id}", device_id=device_id, actor=scoped
        )
    now = utcnow()
    with session_factory.begin() as db:
        for approval_id in asked.values():
            approvals.approve(db, wipe, approval_id, actor=BOB, now=now)
        label_device(db, "dev_002", {"store": "7"}, [], actor=BOB)
    assert approvals.release_due(session_factory, wipe, now=now + timedelta(seconds=DELAY)) == 1
    assert _state(session_factory, asked["dev_001"]) == "released"
    assert _state(session_factory, asked["dev_002"]) == "cancelled"
    with session_factory() as db:
        sent = db.execute(select(FcmDispatch.device_id)).scalars().all()
        reason = db.execute(
            select(AuditEvent.details).where(
                AuditEvent.action == "approval.cancel", AuditEvent.target == asked["dev_002"]
            )
        ).scalar_one()["reason"]
    assert sent == ["dev_001"] and "left the requester's scope (store=42)" in reason


def _race(factory: sessionmaker[Session], moves: list[Callable[[Session], object]]) -> list[bool]:
    """Run ``moves`` at the same moment, each in its own transaction (a refusal's audit row commits too)."""

    def attempt(i: int) -> bool:
        with factory() as db:
            try:
                won = moves[i](db)
            except approvals.ApprovalClosed:
                won = False
            db.commit()
            return bool(won)

    return run_together(len(moves), attempt)


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite serializes writers: the race is PostgreSQL's
def test_racing_decisions_one_wins(backend: str, session_factory: sessionmaker[Session], wipe: Settings) -> None:
    """Two approvals and two denials at the same moment: one changes the row, the others are refused and
    audited; then two cancels and two releases when the delay is over: one of them, and the wipe is
    dispatched exactly when the release won."""
    add_device(session_factory, "dev_001")
    for round_ in range(3):
        approval_id = ask_wipe(session_factory, wipe, request_id=f"wipe-{round_}")
        outcomes = _race(
            session_factory,
            [
                lambda db: approvals.approve(db, wipe, approval_id, actor=BOB),
                lambda db: approvals.approve(db, wipe, approval_id, actor=CAROL),
                lambda db: approvals.deny(db, approval_id, actor=BOB),
                lambda db: approvals.deny(db, approval_id, actor=CAROL),
            ],
        )
        assert outcomes.count(True) == 1, outcomes
        assert sum(1 for row in audit_rows(session_factory, approval_id) if row[2] == "denied") == 3
        if _state(session_factory, approval_id) != "approved":
            continue
        due = utcnow() + timedelta(seconds=DELAY)
        outcomes = _race(
            session_factory,
            [
                lambda db: approvals.cancel(db, approval_id, actor=CAROL, now=due),
                lambda db: approvals.cancel(db, approval_id, actor=BOB, now=due),
                lambda db: release(db, wipe, approval_id, due),
                lambda db: release(db, wipe, approval_id, due),
            ],
        )
        assert outcomes.count(True) == 1, outcomes
        released = _state(session_factory, approval_id) == "released"
        with session_factory() as db:
            sent = db.execute(select(FcmDispatch.id).where(FcmDispatch.request_id == f"wipe-{round_}")).first()
        assert (sent is not None) == released


def test_retention_deletes_only_ended_approvals(session_factory: sessionmaker[Session], wipe: Settings) -> None:
    add_device(session_factory, "dev_001")
    long_ago = utcnow() - timedelta(days=400)
    old_open = ask_wipe(session_factory, wipe, request_id="old-open", now=long_ago)
    old_denied = ask_wipe(session_factory, wipe, request_id="old-denied", now=long_ago)
    recent_denied = ask_wipe(session_factory, wipe, request_id="recent-denied")
    with session_factory.begin() as db:
        approvals.deny(db, old_denied, actor=BOB, now=long_ago)
        approvals.deny(db, recent_denied, actor=BOB)
    with session_factory() as db:
        result = cleanup_old_approvals(db)
        db.commit()
        left = set(db.execute(select(Approval.id)).scalars())
    assert result["deleted"] == 1 and left == {old_open, recent_denied}


def test_the_maintenance_loop_releases_and_expires(session_factory: sessionmaker[Session], wipe: Settings) -> None:
    """``nexmdm serve`` and ``nexmdm worker`` run :class:`Maintenance`: its tick releases what is due, its
    leader's sweep expires what nobody decided on."""
    add_device(session_factory, "dev_001")
    now_settings = wipe.with_overrides(destructive_delay_seconds=0)
    released = ask_wipe(session_factory, now_settings, request_id="wipe-now")
    forgotten = ask_wipe(session_factory, now_settings, request_id="wipe-old", now=utcnow() - timedelta(days=2))
    with session_factory.begin() as db:
        approvals.approve(db, now_settings, released, actor=BOB)
    loop = Maintenance(session_factory, session_factory.kw["bind"], now_settings, holder="test")
    assert loop.tick()
    assert _state(session_factory, released) == "released" and dispatch_count(session_factory) == 1
    assert loop.leader and _state(session_factory, forgotten) == "expired"


def test_a_device_enrolled_again_meanwhile_is_not_wiped(session_factory: sessionmaker[Session], wipe: Settings) -> None:
    """The wipe was asked for the phone enrolled then: a new enrollment of the same id (another phone) is spared."""
    add_device(session_factory, "dev_001")
    approval_id = ask_wipe(session_factory, wipe)
    now = utcnow()
    with session_factory.begin() as db:
        approvals.approve(db, wipe, approval_id, actor=BOB, now=now)
        db.get_one(Device, "dev_001").generation += 1
    assert approvals.release_due(session_factory, wipe, now=now + timedelta(seconds=DELAY)) == 0
    assert _state(session_factory, approval_id) == "cancelled" and dispatch_count(session_factory) == 0
    assert audit_rows(session_factory, approval_id)[-1][0] == "approval.cancel"
