"""Retention of the audit trail and of the webhook outbox, run by ``nexmdm cleanup`` with the others
(registered in ``core.ops.retention``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, and_
from sqlalchemy.orm import Session

from core.models import AuditEvent, WebhookOutbox
from core.storage.batched_delete import batched_cleanup

_AUDIT: Table = AuditEvent.__table__  # type: ignore[assignment]
_OUTBOX: Table = WebhookOutbox.__table__  # type: ignore[assignment]


def cleanup_old_audit_events(
    db: Session, *, retention_days: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete audit events older than the cutoff (``NEXMDM_AUDIT_RETENTION_DAYS``, default 365)."""
    return batched_cleanup(
        db,
        entity="audit_events",
        table=_AUDIT,
        keys=(_AUDIT.c.at, _AUDIT.c.id),
        condition=lambda cutoff: _AUDIT.c.at < cutoff,
        retention_days=retention_days,
        dry_run=dry_run,
    )


def cleanup_old_webhook_deliveries(
    db: Session, *, retention_days: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete delivered and dead outbox rows older than the cutoff (``NEXMDM_WEBHOOK_RETENTION_DAYS``, 30)."""
    return batched_cleanup(
        db,
        entity="webhook_outbox",
        table=_OUTBOX,
        keys=(_OUTBOX.c.id,),
        condition=lambda cutoff: and_(_OUTBOX.c.status.in_(("delivered", "dead")), _OUTBOX.c.created_at < cutoff),
        retention_days=retention_days,
        dry_run=dry_run,
    )
