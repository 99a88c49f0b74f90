"""The one place a command finishes: acked, failed, cancelled or expired, and what that does to its push.

Every path that ends a pending command (an ack, a cancel, a device's revocation, a campaign's cancel, the
expiry sweep) builds its UPDATE here, so the rules hold everywhere: only a ``pending`` command finishes,
``finished_at`` is stamped, and a push that will now never be sent is ``skipped``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Update, and_, case, or_, update

from core.models import FcmDispatch


def finished_fcm_status(now: datetime) -> ColumnElement[str]:
    """``fcm_status`` for a command that is finishing now (acked, failed, expired, cancelled).

    A push still ``pending`` and not in a delivery worker's hands will never be sent (workers claim only
    pending commands): it becomes ``skipped``, so statistics never show a finished command as waiting
    for a push. A push in flight keeps ``pending``: after an ack (the lease kept) its worker still records
    the outcome (``core.commands.push.DeliveryWorker.record``); where :func:`finish_pending` releases the
    lease (cancel, revocation, expiry) the worker's record no longer owns the row, and ``sweep_expired``
    settles the push as ``skipped``.
    """
    unpushed = and_(
        FcmDispatch.fcm_status == "pending",
        or_(FcmDispatch.lease_until.is_(None), FcmDispatch.lease_until < now),
    )
    return case((unpushed, "skipped"), else_=FcmDispatch.fcm_status)


def finish_pending(
    *conditions: ColumnElement[bool], status: str, now: datetime, keep_lease: bool = False, **values: Any
) -> Update:
    """The UPDATE that finishes the pending commands matching ``conditions`` as ``status``.

    A delivery worker's lease on the row is released (its push outcome is no longer recorded) unless
    ``keep_lease``: an ack keeps it, so a push in flight still records how it went. ``values`` are the
    status's own columns (``acked_at``, ``ack_detail``).
    """
    fields: dict[str, Any] = {"status": status, "finished_at": now, "fcm_status": finished_fcm_status(now)}
    if not keep_lease:
        fields["lease_until"] = None
    return (
        update(FcmDispatch)
        .where(FcmDispatch.status == "pending", *conditions)
        .values(**fields, **values)
        .execution_options(synchronize_session=False)
    )
