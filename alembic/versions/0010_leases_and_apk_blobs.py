"""leases, and APK contents in the database

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-29 20:10:00

``leases``: one holder at a time for a named job (the maintenance leader, a cleanup) across nodes, taken
and renewed by a conditional UPDATE, so it works through PgBouncer in transaction mode (a session-level
advisory lock does not). ``apk_blobs``/``apk_chunks``: the bytes of APK builds, so that every node can
serve every build. New tables only: nothing existing is rewritten.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types


revision: str = "0010"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("taken_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "apk_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("created_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_apk_blobs")),
    )
    op.create_table(
        "apk_chunks",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"], ["apk_blobs.sha256"], name=op.f("fk_apk_chunks_sha256_apk_blobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sha256", "seq", name=op.f("pk_apk_chunks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # APKs are ZIP archives already: TOAST out of line without trying to compress them again
        op.execute("ALTER TABLE apk_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("apk_chunks")
    op.drop_table("apk_blobs")
    op.drop_table("leases")
