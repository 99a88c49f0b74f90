"""APK builds and the audit trail of their downloads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base
from core.storage.types import UTCDateTime, utcnow

DOWNLOAD_SOURCES = ("enrollment", "update", "manual", "ci")


class ApkBuild(Base):
    __tablename__ = "apk_builds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_code: Mapped[int] = mapped_column(Integer, unique=True)
    version_name: Mapped[str] = mapped_column(String(64))
    #: the package its manifest declares, read at upload (None: unreadable, or uploaded before migration 0022)
    package: Mapped[str | None] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: withdrawn by an operator (``nexmdm apk remove``): never "latest", never served again
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApkDownloadEvent(Base):
    __tablename__ = "apk_download_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_id: Mapped[int] = mapped_column(Integer, ForeignKey("apk_builds.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(160))
    ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("source IN ('enrollment', 'update', 'manual', 'ci')", name="source_known"),
        Index(None, "created_at"),
        Index(None, "build_id", "created_at"),
        # "has this credential started a download of this build within the hour" (one event per session)
        Index(None, "token_id", "build_id", "created_at"),
    )
