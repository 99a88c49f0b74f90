"""console sessions: one-time sign-in links, pending OpenID Connect sign-ins and signed-in sessions

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 03:00:00

A new table, and an index for the audit of one device (``audit_events (target, at)``). Secrets are stored as SHA-256 hashes (``token_hash``, unique: the look-up key); rows
that ended are deleted by retention through ``expires_at`` (indexed).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models.base
import core.storage.types
from core.storage.migrations import create_index_concurrently, drop_index_concurrently


revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("scope", sa.String(length=1024), nullable=True),
        sa.Column("created_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", core.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("data", core.models.base.JSONType, nullable=True),
        sa.CheckConstraint("kind IN ('link', 'oidc', 'session')", name=op.f("ck_console_sessions_kind_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_sessions_token_hash")),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"], unique=False)
    # the audit of one device or campaign, newest first (built without blocking writers on PostgreSQL)
    create_index_concurrently(op.f("ix_audit_events_target_at"), "audit_events", ["target", "at"])


def downgrade() -> None:
    drop_index_concurrently(op.f("ix_audit_events_target_at"), "audit_events")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_table("console_sessions")
