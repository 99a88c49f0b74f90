"""Audit trail, webhook endpoints and their outbox, and device presence (online/offline transitions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType
from core.storage.types import SecretText, UTCDateTime, utcnow

#: an id column that is BIGINT on PostgreSQL and SQLite's rowid alias (INTEGER PRIMARY KEY) there
BigId = BigInteger().with_variant(Integer(), "sqlite")

AUDIT_OUTCOMES = ("success", "denied")
OUTBOX_STATUSES = ("pending", "delivered", "dead")
PRESENCE_STATES = ("online", "offline")


class AuditEvent(Base):
    """One admin change (``success``, written in the change's transaction) or an aggregate of refusals.

    Refusals (``denied``: a 403, or a failed admin authentication) are counted per actor or address,
    action and minute in one row (``aggregate_key`` unique, ``count`` growing), never one row per attempt.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(300))
    client_address: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    count: Mapped[int] = mapped_column(Integer, default=1)
    aggregate_key: Mapped[str | None] = mapped_column(String(400))

    __table_args__ = (
        CheckConstraint("outcome IN ('success', 'denied')", name="outcome_known"),
        CheckConstraint("count >= 1", name="count_positive"),
        UniqueConstraint("aggregate_key"),
        Index(None, "at"),
        Index(None, "actor", "id"),
        Index(None, "action", "id"),
        Index(None, "target", "at"),  # a device's or a campaign's audit (the console's device page)
    )


class WebhookEndpoint(Base):
    """A receiver of fleet events. The signing secret is kept (HMAC needs it) and shown only at creation."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSONType)
    secret: Mapped[str] = mapped_column(SecretText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookOutbox(Base):
    """One event for one endpoint: delivered at least once, in order per (endpoint, ``order_key``)."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40))
    endpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(40))
    #: the device the event is about ('' when none): deliveries with the same key go out in order
    order_key: Mapped[str] = mapped_column(String(128), default="")
    #: the exact bytes that are signed and sent, fixed at creation so every retry is identical
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status_known"),
        UniqueConstraint("endpoint_id", "event_id"),
        Index(None, "status", "next_attempt_at"),
        Index(None, "endpoint_id", "order_key", "status", "id"),
        Index(None, "created_at"),
    )


class DevicePresence(Base):
    """The last online/offline state announced for a device (never stored on ``devices``, which heartbeats lock)."""

    __tablename__ = "device_presence"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(8))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("state IN ('online', 'offline')", name="state_known"),
        Index(None, "state", "device_id"),
    )


class PresenceSweep(Base):
    """When the presence sweep last ran, and since when devices get a fresh offline window (after an outage)."""

    __tablename__ = "presence_sweeps"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    swept_at: Mapped[datetime] = mapped_column(UTCDateTime)
    grace_from: Mapped[datetime] = mapped_column(UTCDateTime)
