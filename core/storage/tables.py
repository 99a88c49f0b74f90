"""The schema's shared metadata, and the tables the fleet view reads, as plain SQLAlchemy Core.

``nexmdm devices list`` must start fast (docs/performance.md, part 5): it reads these two tables with a
Core ``select`` and never imports the ORM or the other models (``core/devices/listing.py``). The ORM classes
``core.models.Device`` and ``core.models.DeviceLabel`` are mapped onto these very ``Table`` objects, so
there is one definition of each table; every other table is declared on its model.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text, text
from sqlalchemy import true as sa_true

from core.storage.types import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: every table of the schema (``core.models.Base.metadata`` is this object)
metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: enrolled devices, with the last-seen summary that heartbeats keep current (ORM: ``core.models.Device``)
devices = Table(
    "devices",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("device_token_hash", String(64), unique=True),
    Column("enrollment_token_id", String(32), ForeignKey("enrollment_tokens.id", ondelete="SET NULL")),
    Column("fcm_token", Text),
    Column("fcm_token_dead_at", UTCDateTime),
    Column("model", String(128)),
    Column("os_version", String(64)),
    Column("agent_version", String(64)),
    # ``agent_version`` as a string of digits that sorts like the version (``core.base.versions``);
    # NULL when it is not a version. Kept at enrollment and at every heartbeat that reports a version.
    Column("agent_version_key", String(400)),
    Column("enrolled_at", UTCDateTime, nullable=False, default=utcnow),
    Column("token_issued_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("last_seen_at", UTCDateTime),
    Column("last_status", String(32)),
    Column("last_battery_pct", Integer),
    Column("last_plugged", Boolean),
    Column("last_network_type", String(16)),
    # grows by one each time a revoked id enrolls again; commands and pushes belong to one generation
    Column("generation", Integer, nullable=False, default=1, server_default="1"),
    # hash of the one-time secret that a lost-answer enrollment retry must present (None: no retry)
    Column("enrollment_secret_hash", String(64)),
    # the hash of the inventory the server holds (``device_inventory.hash``), here because the heartbeat
    # already reads this row: answering ``"inventory": "wanted"`` costs it no statement
    Column("inventory_hash", String(64)),
    # when the server last knew that inventory to be current: a report, or a stored heartbeat carrying
    # the same hash (set by the summary UPDATE the heartbeat already runs); inventory freshness reads it
    Column("inventory_seen_at", UTCDateTime),
    # the device's effective profile (``core.profiles``), here because the heartbeat already reads this row:
    # answering ``"profile": HASH`` costs it no statement. NULL: no profile matches the device.
    Column("effective_hash", String(64)),
    # when ``effective_hash`` last changed: a compliance report on an older hash is ``pending`` for a grace
    Column("effective_since", UTCDateTime),
    # set when the device enrolls or its labels or inventory change: its matched profiles are recomputed
    # lazily (the maintenance sweep, or its next profile fetch), never fleet-wide in the request
    Column("profile_stale", Boolean, nullable=False, default=True, server_default=sa_true()),
    # the device's compliance with its effective profile, stored where it changes (``core.profiles``: a new
    # effective hash makes it ``pending``, a status report judges it, the profile sweep ends the grace) so
    # that counts and selectors read one column: compliant, noncompliant, pending or unknown
    Column("compliance_state", String(16), nullable=False, default="compliant", server_default="compliant"),
    # its reasons while noncompliant, as ``,APP_NOT_UPDATED,API_LEVEL,`` (``@noncompliant(R)`` is a LIKE)
    Column("compliance_reasons", String(400), nullable=False, default=",", server_default=","),
    Index(None, "last_seen_at"),
    Index(None, "agent_version_key"),
    # the marked devices only: the profile sweep finds them without reading the fleet
    Index("ix_devices_profile_stale", "id", postgresql_where=text("profile_stale"), sqlite_where=text("profile_stale")),
    # the revoked devices only (few): the fleet's app counts leave them out without reading the fleet
    Index(
        "ix_devices_revoked",
        "id",
        postgresql_where=text("revoked_at IS NOT NULL"),
        sqlite_where=text("revoked_at IS NOT NULL"),
    ),
    # the pending devices only, by when their grace began: the sweep finds those past it without reading the
    # fleet, and a heartbeat's UPDATE of any other device adds no entry to it
    Index(
        "ix_devices_compliance_pending",
        "effective_since",
        postgresql_where=text("compliance_state = 'pending'"),
        sqlite_where=text("compliance_state = 'pending'"),
    ),
)

#: one ``key=value`` label of a device; ``(key, value, device_id)`` serves every selector term
#: (ORM: ``core.models.DeviceLabel``)
device_labels = Table(
    "device_labels",
    metadata,
    Column("device_id", String(128), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(127), primary_key=True),
    Column("value", String(63), nullable=False),
    Index(None, "key", "value", "device_id"),
)
