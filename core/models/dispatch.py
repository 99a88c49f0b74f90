"""FCM command dispatches, unique on ``request_id`` (the client's Idempotency-Key)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from core.base.statuses import COMMAND_STATUSES, FCM_STATUSES, FINISHED_STATUSES
from core.models.base import Base, JSONType
from core.storage.types import UTCDateTime, utcnow

__all__ = [
    "CAMPAIGN_PUSH_QUEUE",
    "COMMAND_STATUSES",
    "FCM_STATUSES",
    "FINISHED_STATUSES",
    "PLAIN_PUSH_QUEUE",
    "FcmDispatch",
]

#: rows of the push queue: commands still pending whose push is still pending (partial indexes), split in
#: two so that commands of no campaign are claimed first, each half in id order from its own index
PUSH_QUEUE = "status = 'pending' AND fcm_status = 'pending'"
PLAIN_PUSH_QUEUE = f"{PUSH_QUEUE} AND campaign_id IS NULL"
CAMPAIGN_PUSH_QUEUE = f"{PUSH_QUEUE} AND campaign_id IS NOT NULL"


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
    #: the ack's typed result (validated against the action's result schema; ``core.commands.catalogue``)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: why a failed ack failed, one of ``core.commands.action_schemas.ERROR_CODES`` (campaign failure groups read it)
    error_code: Mapped[str | None] = mapped_column(String(32))
    #: the campaign that released this command (NULL: a per-device command); counts group on it
    campaign_id: Mapped[str | None] = mapped_column(String(30))
    #: when the command expires unacknowledged (NULL: ``created_at`` + NEXMDM_COMMAND_TTL_SECONDS)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the device's enrollment generation when the command was created: a re-enrolled id never sees it
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __table_args__ = (
        CheckConstraint(f"status IN ({_sql_list(COMMAND_STATUSES)})", name="status_known"),
        CheckConstraint(f"fcm_status IN ({_sql_list(FCM_STATUSES)})", name="fcm_status_known"),
        Index(None, "device_id", "status"),
        Index(None, "status", "created_at"),
        Index(None, "created_at"),
        Index(None, "fcm_status", "next_attempt_at"),
        Index(None, "campaign_id", "status", "fcm_status"),
        Index(None, "status", "expires_at"),
        # the push queue: the delivery worker claims pending pushes in id order (core/commands/push/queue.py),
        # commands of no campaign before campaign ones (one `lock` never waits behind 100k campaign pushes)
        Index(
            "ix_fcm_dispatches_push_queue",
            "id",
            postgresql_where=text(PLAIN_PUSH_QUEUE),
            sqlite_where=text(PLAIN_PUSH_QUEUE),
        ),
        Index(
            "ix_fcm_dispatches_campaign_push_queue",
            "id",
            postgresql_where=text(CAMPAIGN_PUSH_QUEUE),
            sqlite_where=text(CAMPAIGN_PUSH_QUEUE),
        ),
        # the queue's depth and oldest row (``queue_stats``: ``nexmdm top``, the gauges), index-only
        Index(
            "ix_fcm_dispatches_push_queue_created_at",
            "created_at",
            postgresql_where=text(PUSH_QUEUE),
            sqlite_where=text(PUSH_QUEUE),
        ),
    )
