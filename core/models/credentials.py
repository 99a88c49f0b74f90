"""Enrollment tokens and admin API keys. Only SHA-256 hashes of the secrets are stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType
from core.storage.types import UTCDateTime, utcnow


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    max_uses: Mapped[int] = mapped_column(Integer, default=1)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: labels every device enrolled with this token starts with (``{"store": "42"}``)
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        CheckConstraint("max_uses >= 1", name="max_uses_positive"),
        CheckConstraint("uses >= 0 AND uses <= max_uses", name="uses_in_range"),
    )


#: admin key roles, least to most powerful; each includes everything the ones before it may do
ROLES = ("viewer", "operator", "admin")


class AdminKey(Base):
    __tablename__ = "admin_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the key stops working at this instant (401 ``key_expired``); NULL: it never expires
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: a selector (``store=42``) that limits every device the key reaches; NULL: the whole fleet
    scope: Mapped[str | None] = mapped_column(String(1024))

    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role_known"),)
