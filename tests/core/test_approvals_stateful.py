"""The approval state machine under random sequences (Hypothesis, both databases): request, approve, deny,
cancel, the clock moving, the maintenance sweep, and racing decisions; the database must always agree
with the model, and a command exists exactly for the released approvals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from core import approvals
from core.base.clock import utcnow
from core.base.settings import Settings
from core.events.audit import Actor
from core.models import Approval, AuditEvent, FcmDispatch
from tests.support.approvals import ALICE, BOB, CAROL, ask_wipe, wipe_settings
from tests.support.databases import add_device, run_together

MACHINE_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    database=None,  # no .hypothesis folder in the shared working tree; a failure prints its steps
    suppress_health_check=[HealthCheck.too_slow],
)
DELAY = 600
EXPIRY = timedelta(hours=24)
ADMINS = (ALICE, BOB, CAROL)


class Machine(RuleBasedStateMachine):
    """The model: each approval's expected state, the refusals expected in the audit trail, a clock."""

    factory: sessionmaker[Session]
    wipe: Settings

    def __init__(self) -> None:
        super().__init__()
        with self.factory.begin() as db:
            for table in (Approval, FcmDispatch, AuditEvent):
                db.execute(delete(table))
        self.now = utcnow()
        #: approval id -> {"state", "expires_at", "release_at"}
        self.model: dict[str, dict[str, Any]] = {}
        self.refusals = 0
        self.serial = 0

    def open_ids(self) -> list[str]:
        return sorted(self.model)

    # ------------------------------------------------------------------------------ rules

    @initialize()
    def first_request(self) -> None:
        self.request()

    @rule()
    def request(self) -> None:
        self.serial += 1
        approval_id = ask_wipe(self.factory, self.wipe, request_id=f"wipe-{self.serial}", now=self.now)
        self.model[approval_id] = {"state": "awaiting_approval", "expires_at": self.now + EXPIRY}

    def decide(self, kind: str, pick: int, actor: Actor) -> None:
        approval_id = self.open_ids()[pick % len(self.model)]
        entry = self.model[approval_id]
        with self.factory() as db:
            try:
                if kind == "approve":
                    approvals.approve(db, self.wipe, approval_id, actor=actor, now=self.now)
                elif kind == "deny":
                    approvals.deny(db, approval_id, actor=actor, now=self.now)
                else:
                    approvals.cancel(db, approval_id, actor=actor, now=self.now)
                outcome = "ok"
            except approvals.REFUSALS as exc:
                outcome = type(exc).__name__
            db.commit()
        expected = self.expected(kind, entry, actor)
        assert outcome == ("ok" if expected is None else expected), (kind, entry, actor, outcome)
        if outcome == "ok":
            self.apply(kind, entry)
        else:
            self.refusals += 1

    def expected(self, kind: str, entry: dict[str, Any], actor: Actor) -> str | None:
        """None when the decision must succeed, else the refusal's class name."""
        if kind == "approve" and actor == ALICE:
            return "SelfApprovalRefused"
        live = self.now < entry["expires_at"]
        if kind in ("approve", "deny") and entry["state"] == "awaiting_approval" and live:
            return None
        if kind == "cancel" and entry["state"] in ("awaiting_approval", "approved"):
            return None
        return "ApprovalClosed"

    def apply(self, kind: str, entry: dict[str, Any]) -> None:
        entry["state"] = {"approve": "approved", "deny": "denied", "cancel": "cancelled"}[kind]
        if kind == "approve":
            entry["release_at"] = self.now + timedelta(seconds=DELAY)

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 20), actor=st.sampled_from(ADMINS))
    def approve(self, pick: int, actor: Actor) -> None:
        self.decide("approve", pick, actor)

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 20), actor=st.sampled_from(ADMINS))
    def deny(self, pick: int, actor: Actor) -> None:
        self.decide("deny", pick, actor)

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 20))
    def cancel(self, pick: int) -> None:
        self.decide("cancel", pick, CAROL)

    @rule(seconds=st.sampled_from([1, DELAY - 1, DELAY, 86_399, 86_400]))
    def clock_moves(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def sweep(self) -> None:
        expired = approvals.expire_due(self.factory, now=self.now)
        released = approvals.release_due(self.factory, self.wipe, now=self.now)
        want_expired = want_released = 0
        for entry in self.model.values():
            if entry["state"] == "awaiting_approval" and entry["expires_at"] <= self.now:
                entry["state"] = "expired"
                want_expired += 1
            elif entry["state"] == "approved" and entry["release_at"] <= self.now:
                entry["state"] = "released"
                want_released += 1
        assert (expired, released) == (want_expired, want_released)

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 20))
    def race(self, pick: int) -> None:
        """Bob approves while Carol denies and cancels, at the same moment: at most one change per state."""
        approval_id = self.open_ids()[pick % len(self.model)]
        entry = self.model[approval_id]
        before = entry["state"]
        moves = [
            lambda db: approvals.approve(db, self.wipe, approval_id, actor=BOB, now=self.now),
            lambda db: approvals.deny(db, approval_id, actor=CAROL, now=self.now),
        ]

        def attempt(i: int) -> bool:
            with self.factory() as db:
                try:
                    moves[i](db)
                    won = True
                except approvals.ApprovalClosed:
                    won = False
                db.commit()
            return won

        wins = run_together(len(moves), attempt)
        can = before == "awaiting_approval" and self.now < entry["expires_at"]
        assert wins.count(True) == (1 if can else 0), (before, wins)
        self.refusals += wins.count(False)
        if can:
            self.apply("approve" if wins[0] else "deny", entry)

    # ------------------------------------------------------------------------- invariants

    @invariant()
    def database_agrees(self) -> None:
        with self.factory() as db:
            rows = {r.id: r for r in db.execute(select(Approval)).scalars()}
            commands = set(db.execute(select(FcmDispatch.request_id)).scalars())
            refused = db.execute(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.outcome == "denied")
            ).scalar_one()
        assert {k: r.state for k, r in rows.items()} == {k: e["state"] for k, e in self.model.items()}
        released = {r.target_id for r in rows.values() if r.state == "released"}
        assert commands == released  # a command exists exactly for the released approvals
        for row in rows.values():
            if row.state in ("approved", "released"):
                assert row.decided_by not in (None, row.requested_by)
                assert row.release_at == row.decided_at + timedelta(seconds=DELAY)
            if row.state == "released":
                assert row.ended_at is not None and row.ended_at >= row.release_at
        assert refused == self.refusals


def test_approvals_keep_their_invariants(session_factory: sessionmaker[Session], settings: Settings) -> None:
    add_device(session_factory, "dev_001")
    Machine.factory = session_factory
    Machine.wipe = wipe_settings(settings, destructive_delay_seconds=DELAY)
    run_state_machine_as_test(Machine, settings=MACHINE_SETTINGS)
