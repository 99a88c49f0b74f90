"""A device's stored compliance (``devices.compliance_state``, ``compliance_reasons``): kept where it changes.

- A new effective hash makes the device ``pending`` (``core.profiles.effective``, in the ``UPDATE`` that
  moves the hash) and no profile at all makes it ``compliant``.
- A status report, or the sweep's judgement after an inventory change, stores the judged state
  (:func:`store_judged`); a report that still has items pending keeps the device ``pending`` (or
  ``noncompliant`` with reason ``PENDING`` once its grace is over).
- The maintenance leader's profile sweep ends the grace (:func:`expire`): a device still ``pending``
  ``NEXMDM_PROFILE_GRACE_SECONDS`` after its effective hash changed becomes ``unknown`` (it never
  reported), ``noncompliant`` with reason ``PENDING`` (it reported on an older hash, or items still
  pending) and ``device.noncompliant`` is emitted, or what its report on that hash says (a hash that came
  back to one it had reported on). Set-based; at most ``limit`` noncompliant devices a round get their
  webhook (the rest wait for the next round, still ``pending``), and each exactly once: the ``UPDATE``
  moves only rows still ``pending``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session

from core.base.settings import Settings
from core.events import webhooks
from core.models import Device, DeviceCompliance
from core.profiles.document import keys
from core.profiles.effective import document_of
from core.storage.types import utcnow

PENDING = ",PENDING,"
#: noncompliant devices whose grace ends per sweep round (each gets a ``device.noncompliant`` event)
EXPIRE_LIMIT = 1000


def store_judged(db: Session, device_id: str, digest: str, state: str, reasons: str) -> str | None:
    """Store the judged ``state`` (``reasons``: ``,R1,R2,``) on the device while ``digest`` is still its
    effective hash; returns its stored state before (``None``: the hash moved meanwhile, nothing stored)."""
    row = db.execute(
        select(Device.compliance_state, Device.compliance_reasons)
        .where(Device.id == device_id, Device.effective_hash == digest)
        .with_for_update()
    ).first()
    if row is None:
        return None
    before, before_reasons = row
    if state == "pending":  # items still pending: pending within the grace, then noncompliant (PENDING)
        expired = before == "noncompliant" and before_reasons == PENDING
        state, reasons = ("noncompliant" if expired else "pending"), PENDING
    if (state, reasons) != (before, before_reasons):
        db.execute(
            update(Device)
            .where(Device.id == device_id)
            .values(compliance_state=state, compliance_reasons=reasons)
            .execution_options(synchronize_session=False)
        )
    return str(before)


def _due(settings: Settings, now: datetime) -> Any:
    grace_start = now - timedelta(seconds=settings.profile_grace_seconds)
    return and_(Device.compliance_state == "pending", Device.effective_since < grace_start)


def expire(db: Session, settings: Settings, now: datetime | None = None, *, limit: int = EXPIRE_LIMIT) -> int:
    """End the grace of the pending devices past it (see the module); returns how many devices moved."""
    now = now or utcnow()
    due = _due(settings, now)
    report = select(DeviceCompliance.device_id).where(DeviceCompliance.device_id == Device.id)
    on_current = report.where(DeviceCompliance.reported_hash == Device.effective_hash)
    moved = 0
    for state, which in (
        ("unknown", ~exists(report)),
        ("compliant", exists(on_current.where(DeviceCompliance.state == "compliant"))),
    ):
        result = db.execute(
            update(Device).where(due, which).values(compliance_state=state).execution_options(synchronize_session=False)
        )
        moved += int(result.rowcount or 0)  # type: ignore[attr-defined]
    # the rest reported (on an older hash, or items pending, or noncompliant on a hash that came back)
    batch = select(Device.id).where(due).order_by(Device.effective_since, Device.id).limit(limit)
    own_reasons = (
        select(DeviceCompliance.reasons)
        .where(
            DeviceCompliance.device_id == Device.id,
            DeviceCompliance.reported_hash == Device.effective_hash,
            DeviceCompliance.state == "noncompliant",
        )
        .scalar_subquery()
    )
    rows = db.execute(
        update(Device)
        .where(due, Device.id.in_(batch.scalar_subquery()))
        .values(compliance_state="noncompliant", compliance_reasons=func.coalesce(own_reasons, PENDING))
        .returning(Device.id, Device.effective_hash, Device.compliance_reasons)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        _emit_noncompliant(db, rows)
    return moved + len(rows)


def _emit_noncompliant(db: Session, rows: Sequence[Any]) -> None:
    """``device.noncompliant`` for each device whose grace ended noncompliant, in one multi-row insert;
    ``items``: the keys not reported compliant on its hash (every key when it never reported on it)."""
    endpoints = webhooks.subscribers(db, "device.noncompliant")
    if not endpoints:
        return
    ids = [row.id for row in rows]
    reports = {
        r.device_id: (r.reported_hash, r.items)
        for r in db.execute(
            select(DeviceCompliance.device_id, DeviceCompliance.reported_hash, DeviceCompliance.items).where(
                DeviceCompliance.device_id.in_(ids)
            )
        )
    }
    documents: dict[str, list[str]] = {}
    events: list[tuple[dict[str, Any], str | None]] = []
    for row in sorted(rows, key=lambda r: str(r.id)):
        reported_hash, items = reports.get(row.id, (None, []))
        if reported_hash == row.effective_hash:
            wanted = [i["key"] for i in items if i["state"] != "compliant"]
        else:
            if row.effective_hash not in documents:
                documents[row.effective_hash] = _item_keys(db, str(row.effective_hash))
            wanted = documents[row.effective_hash]
        reasons = [r for r in str(row.compliance_reasons).split(",") if r]
        data = {"device_id": row.id, "effective_hash": row.effective_hash, "reasons": reasons, "items": wanted}
        events.append((data, str(row.id)))
    webhooks.emit_many(db, "device.noncompliant", events, endpoints=endpoints)


def _item_keys(db: Session, digest: str) -> list[str]:
    return sorted(keys(document_of(db, digest) or {}))
