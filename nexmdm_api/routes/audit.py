"""The audit trail for admins: filters and keyset paging, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from litestar import Controller
from litestar.params import Parameter

from core.base.errors import InvalidArgument
from core.events import audit
from nexmdm_api.auth import admin_route
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import get
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_admin import AuditEventOut, AuditPage

AuditCursor = Annotated[
    str | None,
    Parameter(
        description="`next_cursor` of the previous page (the last event's time in µs and id; a bare id still works)",
        pattern=r"^[0-9]{1,18}(-[0-9]{1,18})?$",
    ),
]
Filter = Annotated[str | None, Parameter(max_length=200, pattern=r"^[A-Za-z0-9._:@*/ -]+$")]


class AuditController(Controller):
    """The audit trail."""

    path = "/v1/audit"
    tags = ["admin"]

    @get(
        "/",
        summary="The audit trail",
        description=(
            "Newest first, by time then id. `actor` is exact (`key:ci`, `cli:root@host`, `system:worker`, "
            "`anonymous`); `action` is exact or a family (`device.*`); `since` is an RFC 3339 instant. `denied` rows "
            "count refusals per actor (or address), action and minute in `count`, at the start of their minute."
        ),
        **admin_route("admin", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_audit(
        self,
        db: DB,
        limit: Limit = 100,
        cursor: AuditCursor = None,
        since: Annotated[datetime | None, Parameter(description="only events at or after this instant")] = None,
        actor: Filter = None,
        action: Filter = None,
        outcome: Annotated[Literal["success", "denied"] | None, Parameter(description="only this outcome")] = None,
    ) -> AuditPage:
        if since is not None and since.utcoffset() is None:
            raise InvalidArgument("since must carry a time zone (2026-01-31T12:00:00Z)", field="since")
        rows, next_cursor = keyset_page(
            lambda n: audit.list_events(
                db,
                since=since,
                actor=actor,
                action=action,
                outcome=outcome,
                before=audit.parse_cursor(cursor) if cursor else None,
                limit=n,
            ),
            limit,
            audit.cursor_of,
        )
        return AuditPage(items=[convert(r, AuditEventOut) for r in rows], next_cursor=next_cursor)
