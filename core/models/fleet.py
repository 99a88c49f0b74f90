"""Fleet operations: device labels, campaigns and their targets (the snapshot taken at creation)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType
from core.storage.tables import device_labels
from core.storage.types import UTCDateTime, utcnow

#: ``awaiting_approval``: a destructive campaign before its approval's release (``core.approvals``)
CAMPAIGN_STATUSES = ("awaiting_approval", "running", "paused", "halted", "completed", "cancelled")
#: a campaign in one of these states never changes again
CAMPAIGN_FINAL = ("completed", "cancelled")
#: a target is ``queued`` until cancelled; whether its command was released is the campaign's release
#: position (``Campaign.unreleased``), so a release never rewrites the targets it releases. A campaign with
#: ``success_when`` adds outcomes: ``skipped`` (already satisfied at the snapshot: no command), then after
#: the ack ``succeeded`` (the device matches) or ``failed`` (``reason``: ``outcome_timeout``)
TARGET_STATES = ("queued", "cancelled", "skipped", "succeeded", "failed")


class DeviceLabel(Base):
    """One ``key=value`` label of a device; mapped onto ``core.storage.tables.device_labels`` (defined there)."""

    __table__ = device_labels

    device_id: Mapped[str]
    key: Mapped[str]
    value: Mapped[str]


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the request's canonical JSON: a replay must match it
    request_hash: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    payload_hash: Mapped[str] = mapped_column(String(128))
    selector: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(24), default="running")
    reason: Mapped[str | None] = mapped_column(String(32))
    targeted: Mapped[int] = mapped_column(Integer, default=0)
    wave_size: Mapped[int] = mapped_column(Integer)
    wave_count: Mapped[int] = mapped_column(Integer)
    #: waves whose release has started (the last one may still be releasing in batches)
    waves_released: Mapped[int] = mapped_column(Integer, default=0)
    #: while wave ``waves_released`` is being released in batches: the last device id released so far
    #: ("" before the first batch); NULL once the wave is fully released
    release_cursor: Mapped[str | None] = mapped_column(String(128))
    wave_percent: Mapped[float | None] = mapped_column(Float)
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    min_success_pct: Mapped[float | None] = mapped_column(Float)
    max_failure_pct: Mapped[float | None] = mapped_column(Float)
    expires_in_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_wave_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the counts, frozen when the campaign ends (NULL while it runs: they come from a GROUP BY)
    final_counts: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: the scope of the key that created it (its targets are inside it); NULL: created unscoped
    scope: Mapped[str | None] = mapped_column(String(1024))
    #: a selector: a target succeeds once its device matches it after the ack (NULL: the ack is the success)
    success_when: Mapped[str | None] = mapped_column(Text)
    #: how long after its ack a target may take to match ``success_when`` before it fails (``outcome_timeout``)
    outcome_timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    #: when the maintenance loop last decided the campaign's waiting targets (``core.campaigns.outcomes.sweep``)
    outcome_swept_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: ``command`` (one command to many devices) or ``profile`` (a profile rollout: its waves move devices to
    #: ``to_version`` of ``profile_name``; no command is sent, ``core.campaigns.profile_rollouts``)
    kind: Mapped[str] = mapped_column(String(16), default="command", server_default="command")
    profile_name: Mapped[str | None] = mapped_column(String(63))
    #: the profile's version before the rollout (NULL: a new profile) and the one it rolls out
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint(
            "status IN ('awaiting_approval', 'running', 'paused', 'halted', 'completed', 'cancelled')",
            name="status_known",
        ),
        Index(None, "idempotency_key", unique=True),
        Index(None, "status"),
    )


class CampaignTarget(Base):
    """A device in a campaign's snapshot: its wave, and ``cancelled`` when it will never get its command."""

    __tablename__ = "campaign_targets"

    campaign_id: Mapped[str] = mapped_column(
        String(30), ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    #: the device's enrollment generation at the snapshot: a re-enrolled id is not this target
    generation: Mapped[int] = mapped_column(Integer, default=1)
    wave: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    #: why it was skipped or failed on its outcome (``already_satisfied``, ``outcome_timeout``)
    reason: Mapped[str | None] = mapped_column(String(32))
    #: when its outcome was decided (NULL while it has none)
    outcome_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(f"state IN ({', '.join(repr(s) for s in TARGET_STATES)})", name="state_known"),
        Index(None, "campaign_id", "state", "wave", "device_id"),
        Index(None, "device_id", "state"),
    )
