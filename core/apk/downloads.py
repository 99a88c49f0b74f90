"""The seed's ``record_apk_download``: an append-only audit event per APK download."""

from __future__ import annotations

import functools
import time
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import InvalidArgument
from core.models import DOWNLOAD_SOURCES, ApkDownloadEvent
from core.storage.dialect import bind_params, insert_for, name_of, refused
from core.storage.operations import log_operation
from core.storage.types import utcnow

_DOWNLOADS: Table = ApkDownloadEvent.__table__  # type: ignore[assignment]


@functools.cache
def _statement(dialect: str) -> Any:
    return (
        insert_for(dialect, _DOWNLOADS)
        .values(**bind_params(_DOWNLOADS, "build_id", "source", "token_id", "ip", "created_at"))
        .returning(*_DOWNLOADS.c)
    )


def record_apk_download(
    db: Session, *, build_id: int, source: str, token_id: str | None = None, ip: str | None = None
) -> dict[str, Any]:
    """Append one download audit event (no idempotency: every download is an event)."""
    started = time.perf_counter()
    if isinstance(build_id, bool) or not isinstance(build_id, int) or build_id < 1:
        raise InvalidArgument("build_id must be a positive integer", field="build_id")
    if source not in DOWNLOAD_SOURCES:
        raise InvalidArgument(f"source must be one of {', '.join(DOWNLOAD_SOURCES)}", field="source")
    validation.text(token_id, "token_id", max_length=160)
    ip = validation.ip_address(ip)
    params = {"build_id": build_id, "source": source, "token_id": token_id, "ip": ip, "created_at": utcnow()}
    try:
        row = db.execute(_statement(name_of(db)), params).mappings().one()
    except IntegrityError as exc:
        raise refused(exc, f"APK build {build_id} does not exist") from None
    log_operation("create", "apk_download_events", {"build_id": build_id}, started)
    return {"download": dict(row)}
