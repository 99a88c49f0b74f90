"""Device inventory: what a device reports it has (its hardware/software facts and installed apps), and
the history of its app changes.

One ``device_inventory`` row per device holds the last reported document's hash and device fields;
``device_apps`` holds its apps (one row per package, replaced by each report); ``device_app_changes``
keeps what changed between reports (``installed``, ``updated``, ``downgraded``, ``removed``) for
``NEXMDM_APP_CHANGE_RETENTION_DAYS``. The hash is also kept on ``devices.inventory_hash``, where the
heartbeat already reads the device's row (``core/heartbeats/store.py``).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base
from core.models.events import BigId
from core.storage.types import UTCDateTime, utcnow

APP_CHANGES = ("installed", "updated", "downgraded", "removed")


class DeviceInventory(Base):
    """A device's last reported inventory: its hash and device fields (one row per device)."""

    __tablename__ = "device_inventory"

    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    #: SHA-256 hex of the canonical document (``core.inventory.document.canonical_hash``)
    hash: Mapped[str] = mapped_column(String(64))
    manufacturer: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    os_version: Mapped[str | None] = mapped_column(String(64))
    api_level: Mapped[int | None] = mapped_column(Integer)
    security_patch: Mapped[date | None] = mapped_column(Date)
    build_fingerprint: Mapped[str | None] = mapped_column(String(256))
    storage_total_mb: Mapped[int | None] = mapped_column(BigInteger)
    storage_free_mb: Mapped[int | None] = mapped_column(BigInteger)
    ram_mb: Mapped[int | None] = mapped_column(BigInteger)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    #: kept only when ``NEXMDM_INVENTORY_SERIAL=true`` (personal data is opt-in)
    serial: Mapped[str | None] = mapped_column(String(128))
    #: the device reported a serial that was not kept: a PATCH's result cannot be re-hashed by the server
    serial_withheld: Mapped[bool] = mapped_column(Boolean, default=False)
    app_count: Mapped[int] = mapped_column(Integer, default=0)
    #: the last report that changed something (a PUT or PATCH; the same hash again writes nothing)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "api_level"), Index(None, "manufacturer"))


class DeviceApp(Base):
    """One installed app of a device, as last reported."""

    __tablename__ = "device_apps"

    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    package: Mapped[str] = mapped_column(String(255), primary_key=True)
    version_code: Mapped[int] = mapped_column(BigInteger)
    version_name: Mapped[str | None] = mapped_column(String(64))
    installer: Mapped[str | None] = mapped_column(String(255))
    system: Mapped[bool | None] = mapped_column(Boolean)
    enabled: Mapped[bool | None] = mapped_column(Boolean)
    signing_sha256: Mapped[str | None] = mapped_column(String(64))

    # ``@app(P)`` and ``@app(P)<N`` are probes of this index; ``apps show P`` and ``apps list`` count from it
    # alone (an index-only scan: the version name is in it for the most common version's name)
    __table_args__ = (Index(None, "package", "version_code", "version_name", "device_id"),)


class DeviceAppChange(Base):
    """One app change between two reports of a device."""

    __tablename__ = "device_app_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"))
    package: Mapped[str] = mapped_column(String(255))
    change: Mapped[str] = mapped_column(String(16))
    from_version_code: Mapped[int | None] = mapped_column(BigInteger)
    to_version_code: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("change IN ('installed', 'updated', 'downgraded', 'removed')", name="change_known"),
        Index(None, "at"),  # retention walks the oldest first
        Index(None, "device_id", "id"),  # a device's changes, newest first, keyset pages
    )
