"""Profiles (desired state): named, versioned documents layered by selector and priority.

``profiles`` holds one row per name (its current version, selector and priority, copied from that
version's document so that set-based queries need not parse JSON); ``profile_versions`` holds every
version, immutable. ``device_profiles`` is who each profile matches now (filled by one ``INSERT ...
SELECT`` over the compiled selector). ``profile_effective`` names each combination of matched profile
versions once (``combo``), with its merged document and hash; the device's ``effective_hash`` lives on
``devices``, where the heartbeat already reads the row. ``device_compliance`` is the device's last status
report, as judged by the server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType
from core.storage.types import UTCDateTime, utcnow

COMPLIANCE_STATES = ("compliant", "noncompliant", "pending", "unknown")
#: ``device_profiles.version`` of a device a profile rollout holds out of the profile until its wave
HELD_OUT = 0


class Profile(Base):
    """A profile's name and current version (``deleted_at``: deleted; its versions are kept)."""

    __tablename__ = "profiles"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    current_version: Mapped[int] = mapped_column(Integer)
    selector: Mapped[str] = mapped_column(String(1024))
    priority: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProfileVersion(Base):
    """One immutable version of a profile's document."""

    __tablename__ = "profile_versions"

    name: Mapped[str] = mapped_column(String(63), ForeignKey("profiles.name", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: SHA-256 hex of the canonical document: an unchanged document is recognised without comparing JSON
    sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceProfile(Base):
    """A profile that matches a device now (recomputed set-based when the profile or the device changes)."""

    __tablename__ = "device_profiles"

    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), ForeignKey("profiles.name", ondelete="CASCADE"), primary_key=True)
    #: NULL: the device follows the profile's current version; a number: a profile rollout holds it at that
    #: version until its wave; 0 (``HELD_OUT``): held out of the profile until its wave (it matches only the
    #: new version). Held rows are never touched by the recomputation of memberships.
    version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index(None, "name", "device_id"),)


class ProfileEffective(Base):
    """One combination of matched profile versions (``a:3,b:1``), its merged document and hash."""

    __tablename__ = "profile_effective"

    #: ``name:version`` of each matched profile, comma-separated (any order: a combination may have
    #: several spellings, each names the same document)
    combo: Mapped[str] = mapped_column(Text, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceCompliance(Base):
    """A device's last profile status report and the server's judgement of it (one row per device)."""

    __tablename__ = "device_compliance"

    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    #: the effective hash the report was about (``reported_at``: when it was last judged, by a report or by
    #: the sweep after an inventory change)
    reported_hash: Mapped[str] = mapped_column(String(64))
    #: compliant or noncompliant, after the server's verification
    state: Mapped[str] = mapped_column(String(16))
    #: the distinct non-compliance reasons, sorted, as ``,APP_NOT_UPDATED,API_LEVEL,`` (``@noncompliant(R)`` is a
    #: LIKE on both databases)
    reasons: Mapped[str] = mapped_column(String(400))
    #: per item: ``{"key", "state", "reason"?, "detail"?, "reported"?: {...}, "verified": bool}``
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: when the state last changed (webhooks fire on a change only)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "state"),)
