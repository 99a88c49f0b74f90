"""Helpers for approval tests: settings where ``wipe`` is a configured action, two admins, a device."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import approvals
from core.base.settings import Settings
from core.events.audit import Actor
from core.models import AuditEvent, FcmDispatch

ALICE = Actor("key:alice", "127.0.0.1")
BOB = Actor("key:bob", "127.0.0.1")
CAROL = Actor("key:carol-operator", "127.0.0.1")


def wipe_settings(settings: Settings, **overrides: Any) -> Settings:
    """``wipe`` configured (``NEXMDM_ACTIONS``) until the typed catalogue declares it."""
    return settings.with_overrides(actions=(*settings.actions, "wipe"), **overrides)


def ask_wipe(
    factory: sessionmaker[Session],
    settings: Settings,
    request_id: str = "wipe-1",
    device_id: str = "dev_001",
    now: datetime | None = None,
    actor: Actor = ALICE,
) -> str:
    with factory.begin() as db:
        created, item = approvals.request_command(
            db,
            settings,
            request_id=request_id,
            device_id=device_id,
            action="wipe",
            payload={"reason": "stolen"},
            actor=actor,
            now=now,
        )
    assert created and item["state"] == "awaiting_approval"
    return str(item["id"])


def dispatch_count(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return int(db.execute(select(func.count()).select_from(FcmDispatch)).scalar_one())


def audit_rows(factory: sessionmaker[Session], target: str) -> list[tuple[str, str, str]]:
    """(action, actor, outcome) of every audit row about ``target``, oldest first."""
    with factory() as db:
        rows = db.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.outcome)
            .where(AuditEvent.target == target)
            .order_by(AuditEvent.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]
