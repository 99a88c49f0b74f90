"""FCM command dispatches, unique on ``request_id`` (the client's Idempotency-Key)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType
from core.statuses import COMMAND_STATUSES, FCM_STATUSES, FINISHED_STATUSES
from core.types import UTCDateTime, utcnow

__all__ = ["COMMAND_STATUSES", "FCM_STATUSES", "FINISHED_STATUSES", "FcmDispatch"]


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class FcmDispatch(Base):
    __tablename__ = "fcm_dispatches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(255), unique=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    payload_hash: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    fcm_status: Mapped[str] = mapped_column(String(16), default="pending")
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
    last_replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: earliest time of the next push attempt (NULL: now); set by retries with backoff
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: a delivery worker owns the row until then (NULL: nobody); never held across a crash for long
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    fcm_message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ack_detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(f"status IN ({_sql_list(COMMAND_STATUSES)})", name="status_known"),
        CheckConstraint(f"fcm_status IN ({_sql_list(FCM_STATUSES)})", name="fcm_status_known"),
        Index(None, "device_id", "status"),
        Index(None, "status", "created_at"),
        Index(None, "created_at"),
        Index(None, "fcm_status", "next_attempt_at"),
    )
