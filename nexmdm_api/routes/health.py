"""Liveness and readiness (metrics come from Litestar's PrometheusController, see the app factory)."""

from __future__ import annotations

from typing import Any

import litestar
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from litestar import Controller, Request
from sqlalchemy.exc import SQLAlchemyError

from core.storage.migrations import alembic_config, current_revision
from nexmdm_api.errors import DATABASE_RETRY_AFTER, ApiError, problems
from nexmdm_api.routes.base import get
from nexmdm_api.schemas import Health, Readiness


def _not_ready(detail: str) -> ApiError:
    return ApiError(503, detail, code="not_ready", headers={"Retry-After": str(DATABASE_RETRY_AFTER)})


def _is_newer(revision: str) -> bool:
    """A revision this code does not know was made by a newer NexMDM: the schema is at or past ours."""
    try:
        return ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(revision) is None
    except (CommandError, RevisionError):
        return True


def readiness(engine: Any, head: str) -> tuple[str | None, str | None]:
    """``(problem, current migration)``; the problem is ``None`` when ready, else why not: the database is
    unreachable or not migrated far enough. The one rule behind ``/readyz`` and the
    ``nexmdm_readiness_failing_seconds`` gauge."""
    try:
        current = current_revision(engine)
    except SQLAlchemyError:
        return "the database is unreachable", None
    if current is None:
        return "the database is not migrated: run `nexmdm db upgrade`", None
    if current != head and not _is_newer(current):
        return f"the database is at migration {current}; this NexMDM needs {head}: run `nexmdm db upgrade`", current
    return None, current


class HealthController(Controller):
    """``/healthz`` and ``/readyz``."""

    path = "/"
    tags = ["health"]

    @litestar.get("/healthz", summary="Liveness: the process answers")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get(
        "/readyz",
        summary="Readiness: the database answers and is migrated far enough",
        responses=problems(503),
    )
    def readyz(self, request: Request[Any, Any, Any]) -> Readiness:
        head = request.app.state.head_revision
        problem, current = readiness(request.app.state.db.read_engine, head)
        if problem is not None:
            raise _not_ready(problem)
        return Readiness(status="ready", database="ok", migration=current, expected_migration=head)
