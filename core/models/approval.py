"""Approvals of destructive actions: a request by one admin, a decision by another, a cooling-off delay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType
from core.storage.types import UTCDateTime, utcnow

APPROVAL_KINDS = ("command", "campaign")
APPROVAL_STATES = ("awaiting_approval", "approved", "denied", "cancelled", "expired", "released")
#: an approval in one of these states never changes again
APPROVAL_FINAL = ("denied", "cancelled", "expired", "released")


class Approval(Base):
    """One destructive command or campaign waiting for, or past, a second admin's decision.

    A command's dispatch does not exist until the approval is ``released``: the request (device, action,
    payload) is kept here, so nothing of it can reach a device's pending list or the push queue before.
    A campaign exists from the request on, in the ``awaiting_approval`` status that no release touches.
    """

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: the command's request id, or the campaign's id
    target_id: Mapped[str] = mapped_column(String(255))
    device_id: Mapped[str | None] = mapped_column(String(128))
    #: the device's enrollment generation at the request: a device id enrolled again since is not released to
    device_generation: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    #: a command's payload, kept until its release (a campaign keeps its own)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(24), default="awaiting_approval")
    requested_by: Mapped[str] = mapped_column(String(200))
    #: the requester's scope (a scoped key or person): a command's release sends nothing to a device outside it
    requested_scope: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: an approval still awaited at this time expires
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: set by the approval: the end of the cooling-off delay
    release_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: who ended it otherwise (a cancel, the expiry or the release) and when
    ended_by: Mapped[str | None] = mapped_column(String(200))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("kind IN ('command', 'campaign')", name="kind_known"),
        CheckConstraint(
            "state IN ('awaiting_approval', 'approved', 'denied', 'cancelled', 'expired', 'released')",
            name="state_known",
        ),
        Index(None, "kind", "target_id", unique=True),
        Index(None, "state", "release_at"),
        Index(None, "requested_at"),
    )
