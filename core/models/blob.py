"""APK contents stored in the database, so that every node can serve every build (``core.apk.storage``).

A build (``apk_builds``) names its contents by SHA-256; the bytes live in ``apk_chunks`` in order, at
most ``chunk_size`` bytes each, under one ``apk_blobs`` row written in the same transaction as the build.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base
from core.storage.types import UTCDateTime, utcnow


class ApkBlob(Base):
    __tablename__ = "apk_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    chunk_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApkChunk(Base):
    __tablename__ = "apk_chunks"

    sha256: Mapped[str] = mapped_column(
        String(64), ForeignKey("apk_blobs.sha256", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
