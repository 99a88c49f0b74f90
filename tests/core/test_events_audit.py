"""The audit trail in core: same transaction as the change, aggregated refusals, actors, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from core import db_utils
from core.access import keys as admin_keys
from core.base.errors import InvalidArgument
from core.enrollment import enroll as enrollment
from core.enrollment import tokens as credentials
from core.events import audit
from core.models import AuditEvent, Device
from core.storage.types import utcnow
from tests.support.audit import seed_out_of_id_order
from tests.support.databases import add_device

ACTOR = audit.Actor("key:ci", "10.0.0.1")


def rows(factory: sessionmaker[Session]) -> list[AuditEvent]:
    with factory() as db:
        return list(db.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars())


def test_a_change_and_its_audit_row_commit_or_roll_back_together(session_factory, device) -> None:
    with pytest.raises(RuntimeError), session_factory.begin() as db:
        enrollment.revoke_device(db, device, actor=ACTOR)
        raise RuntimeError("the caller fails after the change")
    assert rows(session_factory) == []
    with session_factory() as db:
        assert db.get(Device, device).revoked_at is None
    with session_factory.begin() as db:
        enrollment.revoke_device(db, device, actor=ACTOR)
    [row] = rows(session_factory)
    assert (row.actor, row.action, row.target, row.client_address, row.outcome) == (
        "key:ci",
        "device.revoke",
        device,
        "10.0.0.1",
        "success",
    )
    with session_factory.begin() as db:  # revoking again changes nothing: no second row
        enrollment.revoke_device(db, device, actor=ACTOR)
    assert len(rows(session_factory)) == 1


def test_secrets_never_reach_the_audit_trail(session_factory) -> None:
    with session_factory.begin() as db:
        token_secret, token = credentials.create_enrollment_token(db, uses=3, actor=ACTOR)
        key_secret, _ = admin_keys.create_admin_key(db, name="ci2", role="viewer", actor=ACTOR)
    text = repr([(r.actor, r.action, r.target, r.details) for r in rows(session_factory)])
    assert token_secret not in text and key_secret not in text
    assert token_secret.split("_", 1)[1][:16] not in text
    assert [r.action for r in rows(session_factory)] == ["token.create", "key.create"]
    assert rows(session_factory)[1].details == {"role": "viewer"}


def test_denied_refusals_are_one_row_per_actor_action_and_minute(session_factory) -> None:
    now = utcnow().replace(second=30)
    with session_factory.begin() as db:
        for _ in range(3):
            audit.record_denied(db, actor="key:v", action="device.revoke", address="1.2.3.4", at=now, count=2)
        audit.record_denied(db, actor="key:v", action="device.revoke", address="1.2.3.4", at=now + timedelta(minutes=1))
    found = rows(session_factory)
    assert [(r.count, r.at.second) for r in found] == [(6, 0), (1, 0)]
    assert {r.outcome for r in found} == {"denied"}


def test_the_cli_actor_is_the_effective_user_with_sudo_user_in_the_details(monkeypatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    actor = audit.cli_actor()
    assert actor.name.startswith("cli:") and "@" in actor.name
    assert actor.details == {"sudo_user": "alice"}
    monkeypatch.delenv("SUDO_USER")
    assert audit.cli_actor().details == {}


def test_listing_pages_and_filters(session_factory) -> None:
    add_device(session_factory, "dev_a")
    with session_factory.begin() as db:
        for i in range(5):
            audit.record(db, ACTOR if i % 2 else audit.SYSTEM, "device.label" if i < 3 else "token.create", f"t{i}")
    with session_factory() as db:
        first = audit.list_events(db, limit=2)
        second = audit.list_events(db, limit=2, before=(first[-1]["at"], first[-1]["id"]))
        assert [e["target"] for e in first + second] == ["t4", "t3", "t2", "t1"]
        assert [e["target"] for e in audit.list_events(db, actor="system:worker")] == ["t4", "t2", "t0"]
        assert [e["target"] for e in audit.list_events(db, action="device.*")] == ["t2", "t1", "t0"]
        assert [e["target"] for e in audit.iter_events(db, action="token.create", batch=1)] == ["t4", "t3"]


def test_retention_deletes_old_events_only(session_factory) -> None:
    with session_factory.begin() as db:
        db.execute(
            insert(AuditEvent),
            [
                {"at": utcnow() - timedelta(days=400), "actor": "a", "action": "x", "outcome": "success", "count": 1},
                {"at": utcnow() - timedelta(days=10), "actor": "a", "action": "y", "outcome": "success", "count": 1},
            ],
        )
    with session_factory() as db:
        dry = db_utils.run_all_retention_cleanups(db, dry_run=True)["audit_events"]
        assert dry["would_delete"] == 1
        result = db_utils.run_all_retention_cleanups(db, retention_days={"audit_events": 365})["audit_events"]
        assert result["deleted"] == 1
    with session_factory() as db:
        assert db.scalar(select(func.count()).select_from(AuditEvent)) == 1


def test_listing_is_in_time_order_with_refusals_at_their_minute_and_pages_by_time_and_id(session_factory) -> None:
    expected = seed_out_of_id_order(session_factory)
    with session_factory() as db:
        assert [e["target"] for e in audit.list_events(db)] == expected
        assert [e["target"] for e in audit.iter_events(db, batch=1)] == expected
        paged, cursor = [], None
        while True:
            page = audit.list_events(db, limit=1, before=audit.parse_cursor(cursor) if cursor else None)
            if not page:
                break
            paged += page
            cursor = audit.cursor_of(page[-1])
        assert [e["target"] for e in paged] == expected
        # a bare id, the cursor of before, pages from that event's place in time
        b = next(e for e in paged if e["target"] == "b")
        assert [e["target"] for e in audit.list_events(db, before=audit.parse_cursor(str(b["id"])))] == ["a", None]


@pytest.mark.parametrize("bad", ["x", "1-", "-1", "1-2-3", "1.5", "9" * 19, "\u00b2"])
def test_a_malformed_cursor_is_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        audit.parse_cursor(bad)
