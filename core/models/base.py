"""Declarative base on the schema's one metadata (``core/storage/tables.py``, with its constraint naming convention)."""

from __future__ import annotations

from sqlalchemy import JSON
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

from core.storage.tables import NAMING_CONVENTION as NAMING_CONVENTION  # re-exported as core.models.NAMING_CONVENTION
from core.storage.tables import metadata as shared_metadata

#: JSON on SQLite, JSONB on PostgreSQL
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = shared_metadata  # core/storage/tables.py: the Core tables the fleet view reads are on it too
