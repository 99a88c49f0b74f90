"""Enrolled devices, with the last-seen summary that heartbeats keep current."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Mapped

from core.models.base import Base
from core.storage.tables import devices


class Device(Base):
    """Mapped onto ``core.storage.tables.devices`` (the table is defined there, in Core, for the fleet view)."""

    __table__ = devices

    id: Mapped[str]
    device_token_hash: Mapped[str | None]
    enrollment_token_id: Mapped[str | None]
    fcm_token: Mapped[str | None]
    fcm_token_dead_at: Mapped[datetime | None]
    model: Mapped[str | None]
    os_version: Mapped[str | None]
    agent_version: Mapped[str | None]
    agent_version_key: Mapped[str | None]
    enrolled_at: Mapped[datetime]
    token_issued_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    last_status: Mapped[str | None]
    last_battery_pct: Mapped[int | None]
    last_plugged: Mapped[bool | None]
    last_network_type: Mapped[str | None]
    generation: Mapped[int]
    enrollment_secret_hash: Mapped[str | None]
    inventory_hash: Mapped[str | None]
    inventory_seen_at: Mapped[datetime | None]
    effective_hash: Mapped[str | None]
    effective_since: Mapped[datetime | None]
    profile_stale: Mapped[bool]
    compliance_state: Mapped[str]
    compliance_reasons: Mapped[str]
