"""Audit rows for listing tests: refusals dated at the start of their minute, written after later changes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from core.events import audit
from core.models import AuditEvent
from core.storage.types import utcnow


def seed_out_of_id_order(factory: sessionmaker[Session]) -> list[str]:
    """Three changes and, written between the second and the third, a refusal dated at the start of its
    minute (before all three); returns the targets newest first by time (the refusal's is None)."""
    minute = utcnow().replace(second=0, microsecond=0) - timedelta(hours=1)
    with factory.begin() as db:
        for target, second in (("a", 10), ("b", 50)):
            db.execute(
                insert(AuditEvent).values(
                    at=minute + timedelta(seconds=second), actor="key:ci", action="device.label", target=target
                )
            )
        audit.record_denied(
            db, actor="key:v", action="device.revoke", address="1.2.3.4", at=minute + timedelta(seconds=55)
        )
        db.execute(
            insert(AuditEvent).values(
                at=minute + timedelta(seconds=70), actor="key:ci", action="device.label", target="c"
            )
        )
    return ["c", "b", "a", None]
