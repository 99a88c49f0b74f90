"""Device heartbeats, at most one row per device per bucket."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base
from core.storage.types import UTCDateTime

NETWORK_TYPES = ("wifi", "cellular", "ethernet", "vpn", "bluetooth", "none", "unknown")


class DeviceHeartbeat(Base):
    """The natural key ``(device_id, bucket_start)`` is the primary key (no surrogate id).

    It also serves "a device's recent heartbeats" (newest first); ``bucket_start`` alone is indexed for
    retention cleanup, which walks time ranges. On PostgreSQL the table is range-partitioned by day on
    ``bucket_start``, which is why every unique key includes it.
    """

    __tablename__ = "device_heartbeats"

    # No foreign key to devices, on purpose: on PostgreSQL a partition with one cannot be detached or
    # dropped without locking ``devices`` (the referenced side's triggers change), which would stall every
    # heartbeat during retention. Rows are only written for existing devices (the hot path joins on the
    # token, the helper's INSERT ... SELECT checks), and devices are revoked, never deleted.
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str | None] = mapped_column(String(32))
    battery_pct: Mapped[int | None] = mapped_column(Integer)
    plugged: Mapped[bool | None] = mapped_column(Boolean)
    network_type: Mapped[str | None] = mapped_column(String(16))
    agent_version: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint("battery_pct BETWEEN 0 AND 100", name="battery_pct_range"),
        Index(None, "bucket_start"),
        # daily range partitions on PostgreSQL (core/heartbeats/partitions.py); ignored by SQLite
        {"postgresql_partition_by": "RANGE (bucket_start)"},
    )
