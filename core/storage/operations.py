"""What every persistence helper shares: the settings a session carries and the ``db_operation`` log line."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import CursorResult, Result
from sqlalchemy.orm import Session

from core.base.settings import Settings, get_settings

logger = logging.getLogger("nexmdm.db")


def session_settings(db: Session) -> Settings:
    """The settings a session was made with (``make_session_factory``), else the environment's."""
    settings = db.info.get("settings")
    return settings if isinstance(settings, Settings) else get_settings()


def log_operation(
    event: str, entity: str, keys: Mapping[str, Any], started: float, *, level: int = logging.INFO
) -> float:
    """Log the contract's ``db_operation`` line and return the latency in milliseconds."""
    latency_ms = (time.perf_counter() - started) * 1000
    logger.log(level, "db_operation event=%s entity=%s keys=%r latency_ms=%.1f", event, entity, dict(keys), latency_ms)
    return latency_ms


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (``Session.execute`` is typed as returning a plain ``Result``)."""
    return cast(CursorResult[Any], result).rowcount
