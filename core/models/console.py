"""The console's credentials: one-time sign-in links, pending OpenID Connect sign-ins and sessions.

One table for the three, because they are one thing at three moments: a secret whose SHA-256 hash is the
look-up key, with who it signs in (email, role, scope) and when it stops working. A link or a pending
sign-in is used once (``ended_at`` set by a conditional UPDATE); a session ends at sign-out, after
``NEXMDM_CONSOLE_IDLE_MINUTES`` without use or at ``expires_at`` (absolute). Rows that ended are deleted
by retention (``core.ops.retention``, entity ``console_sessions``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType
from core.storage.types import UTCDateTime

#: a one-time sign-in link, a pending OpenID Connect sign-in (state), a signed-in session
CONSOLE_KINDS = ("link", "oidc", "session")


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    role: Mapped[str | None] = mapped_column(String(16))
    #: a selector the person is limited to (``store=42``); None: the whole fleet
    scope: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: a pending OpenID Connect sign-in's PKCE verifier and nonce
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        CheckConstraint("kind IN ('link', 'oidc', 'session')", name="kind_known"),
        Index("ix_console_sessions_expires_at", "expires_at"),
    )
