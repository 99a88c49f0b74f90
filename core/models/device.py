"""Enrolled devices, with the last-seen summary that heartbeats keep current."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base
from core.types import UTCDateTime, utcnow


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    enrollment_token_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("enrollment_tokens.id", ondelete="SET NULL")
    )
    fcm_token: Mapped[str | None] = mapped_column(Text)
    fcm_token_dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    model: Mapped[str | None] = mapped_column(String(128))
    os_version: Mapped[str | None] = mapped_column(String(64))
    agent_version: Mapped[str | None] = mapped_column(String(64))
    #: ``agent_version`` as a string of digits that sorts like the version (``core.fleet.versions``);
    #: NULL when it is not a version. Kept at enrollment and at every heartbeat that reports a version.
    agent_version_key: Mapped[str | None] = mapped_column(String(400))
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    token_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(32))
    last_battery_pct: Mapped[int | None] = mapped_column(Integer)
    last_plugged: Mapped[bool | None] = mapped_column(Boolean)
    last_network_type: Mapped[str | None] = mapped_column(String(16))
    #: grows by one each time a revoked id enrolls again; commands and pushes belong to one generation
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: hash of the one-time secret that a lost-answer enrollment retry must present (None: no retry)
    enrollment_secret_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index(None, "last_seen_at"), Index(None, "agent_version_key"))
