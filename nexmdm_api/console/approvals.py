"""The console's approvals page: destructive commands and campaigns waiting for a second admin, and the
decisions on them (approve, deny: admin; cancel: operator), as forms with their CSRF token.

Each form calls the core function the admin API's route calls (``core.approvals.approve``, ``deny``,
``cancel``) with the console's actor ``user:EMAIL``: the admin who asked may not approve (unless
``NEXMDM_ALLOW_SELF_APPROVAL``), and a closed approval cannot be decided. Such a refusal is audited by the
core function; the handler returns it as the page's error (403 or 409) instead of raising it, so that the
request's transaction commits that audit row, as ``nexmdm_api.routes.approvals`` does. Approvals name
devices and campaigns of the whole fleet: like the API, the page is closed to scoped people (403).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template
from sqlalchemy.orm import Session

from core import approvals
from core.base.errors import NexMDMError
from core.models import APPROVAL_STATES
from nexmdm_api.console import session
from nexmdm_api.console.session import PREFIX
from nexmdm_api.db import DB
from nexmdm_api.errors import to_problem
from nexmdm_api.routes.approvals import _approval_id
from nexmdm_api.routes.base import get, post

PAGE = 50
Query = FromQuery[str]
StateQuery = Annotated[str, QueryParameter(name="state")]  # ``state`` is a name Litestar keeps for app state
FORM = {"body": "form"}


def _page(db: Session, state: str = "", cursor: str = "") -> dict[str, Any]:
    before = _approval_id(cursor) if cursor else None
    rows = approvals.list_approvals(db, state=state or None, limit=PAGE + 1, before=before)
    next_cursor = rows[PAGE - 1]["id"] if len(rows) > PAGE else None
    return {"rows": rows[:PAGE], "next_cursor": next_cursor, "state": state, "states": APPROVAL_STATES}


def _decide(request: Request[Any, Any, Any], db: Session, decide: Callable[[], dict[str, Any]]) -> Response[Any]:
    """The decision, then back to the list; a refusal (already audited) is the page's error, not raised."""
    try:
        decide()
    except approvals.REFUSALS as exc:
        refusal: NexMDMError = exc
    else:
        return Redirect(f"{PREFIX}/approvals", status_code=303)
    problem = to_problem(refusal)
    context = _page(db) | {"error": problem.detail}
    return Template("approvals.html", context=context, status_code=problem.status_code)


class ApprovalPages(Controller):
    """Approvals: the list, approve, deny, cancel."""

    path = f"{PREFIX}/approvals"
    include_in_schema = False

    @get("/", opt={"readonly": True})
    def approval_list(
        self, request: Request[Any, Any, Any], db: DB, in_state: StateQuery = "", cursor: Query = ""
    ) -> Template:
        session.need(request, "viewer", unscoped=True)
        return Template("approvals.html", context=_page(db, in_state, cursor))

    @post("/{approval_id:str}/approve", opt=FORM | {"action": "approval.approve"}, status_code=303)
    def approve(self, request: Request[Any, Any, Any], db: DB, approval_id: FromPath[str]) -> Response[Any]:
        session.need(request, "admin", unscoped=True)
        settings, actor, approval = request.app.state.settings, session.actor(request), _approval_id(approval_id)
        return _decide(request, db, lambda: approvals.approve(db, settings, approval, actor=actor))

    @post("/{approval_id:str}/deny", opt=FORM | {"action": "approval.deny"}, status_code=303)
    def deny(self, request: Request[Any, Any, Any], db: DB, approval_id: FromPath[str]) -> Response[Any]:
        session.need(request, "admin", unscoped=True)
        actor, approval = session.actor(request), _approval_id(approval_id)
        return _decide(request, db, lambda: approvals.deny(db, approval, actor=actor))

    @post("/{approval_id:str}/cancel", opt=FORM | {"action": "approval.cancel"}, status_code=303)
    def cancel(self, request: Request[Any, Any, Any], db: DB, approval_id: FromPath[str]) -> Response[Any]:
        session.need(request, "operator", unscoped=True)
        actor, approval = session.actor(request), _approval_id(approval_id)
        return _decide(request, db, lambda: approvals.cancel(db, approval, actor=actor))
