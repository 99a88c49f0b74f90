"""Where devices are: located fixes (personal data, kept ``NEXMDM_LOCATION_RETENTION_DAYS``) and lost mode."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base
from core.storage.types import UTCDateTime, utcnow

LOCATION_SOURCES = ("locate", "lost_mode")


class DeviceLocation(Base):
    """One fix: the result of a ``locate`` command, or a periodic report of a device in lost mode."""

    __tablename__ = "device_locations"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    accuracy_m: Mapped[float] = mapped_column(Float)
    #: when the device took the fix (its clock); ``received_at`` (ours) drives retention
    fixed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    #: the ``locate`` or ``lost_mode`` command whose ack carried it (NULL: a periodic lost-mode report)
    request_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        CheckConstraint("source IN ('locate', 'lost_mode')", name="source_known"),
        Index(None, "device_id", "fixed_at"),
        Index(None, "received_at"),
    )


class DeviceLostMode(Base):
    """A device in lost mode (``@lost=true``): set by the ack of ``lost_mode``, removed by ``lost_mode_off``."""

    __tablename__ = "device_lost_mode"

    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    #: the enrollment generation it was set for: a revoked and re-enrolled id starts outside lost mode
    generation: Mapped[int] = mapped_column(Integer)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str] = mapped_column(String(255))
