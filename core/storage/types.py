"""Column types shared by every model and every raw-SQL path."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from core.base.clock import utcnow as utcnow  # re-exported: the models' defaults and most of core use it here


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database.

    Binds refuse naive datetimes and are converted to UTC; SQLite stores them as naive UTC text in one
    fixed format, so the same instant always has the same spelling (heartbeat keys depend on it).
    Results are always aware and in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: NexMDM stores timezone-aware UTC timestamps only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Concealed(str):
    """A string whose ``repr`` hides it: what SQLAlchemy's statement and row logging print."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<concealed>'"


class SecretText(TypeDecorator[str]):
    """A stored secret that must stay usable (a webhook's HMAC key): never shown in SQL logs.

    Values go to the driver, and come back, as :class:`Concealed` strings, so ``-v`` logging of
    statements with their parameters (and rows) prints ``'<concealed>'`` instead.
    """

    impl = String(128)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else Concealed(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else Concealed(value)
