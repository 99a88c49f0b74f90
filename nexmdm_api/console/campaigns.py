"""The console's campaign pages (list, one campaign with its waves, progress, outcome and failure groups,
pause/resume/cancel) and the audit trail with its filters.

Least roles as in the admin API: viewer reads campaigns, operator changes them, admin reads the audit
trail. A scoped person reaches the campaigns of their own scope only, as a scoped key does
(``core.campaigns.require_in_scope``: another scope's is 404, an unscoped one 403); the audit trail, which
names every device, is for unscoped admins.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, Request, Response
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from core import campaigns as fleet
from core.base import ids as campaign_ids
from core.base.errors import InvalidArgument
from core.events.audit import cursor_of, list_events, parse_cursor
from nexmdm_api.console import session
from nexmdm_api.console.session import PREFIX
from nexmdm_api.db import DB
from nexmdm_api.routes.base import get, post

PAGE = 50
Query = FromQuery[str]
READ = {"readonly": True}
ACTIONS = {"pause": fleet.pause, "cancel": fleet.cancel, "resume": fleet.resume}


def _campaign_id(value: str) -> str:
    if not re.fullmatch(campaign_ids.PATTERN, value):
        raise InvalidArgument(f"{value[:40]!r} is not a campaign id", field="campaign_id")
    return value


class CampaignPages(Controller):
    """Campaigns, a campaign and its actions, the audit trail."""

    path = PREFIX
    include_in_schema = False

    @get("/campaigns", opt=READ)
    def campaign_list(self, request: Request[Any, Any, Any], db: DB, cursor: Query = "") -> Template:
        who = session.need(request, "viewer")
        before = _campaign_id(cursor) if cursor else None
        rows = fleet.list_campaigns(db, limit=PAGE + 1, before=before, scope=who.scope)
        next_cursor = rows[PAGE - 1]["id"] if len(rows) > PAGE else None
        return Template("campaigns.html", context={"rows": rows[:PAGE], "next_cursor": next_cursor})

    @get("/campaigns/{campaign_id:str}", opt=READ)
    def campaign(self, request: Request[Any, Any, Any], db: DB, campaign_id: FromPath[str]) -> Template:
        who = session.need(request, "viewer")
        data = fleet.get_campaign(db, fleet.require_in_scope(db, _campaign_id(campaign_id), who.scope))
        may_act = who.role in ("operator", "admin")
        return Template("campaign.html", context={"c": data, "may_act": may_act})

    @get("/campaigns/{campaign_id:str}/failures", opt=READ)
    def failures(self, request: Request[Any, Any, Any], db: DB, campaign_id: FromPath[str]) -> Template:
        """The failure groups (``core.campaigns.failure_groups``, as ``GET /v1/campaigns/ID/failures``): loaded by
        htmx into the campaign's page after it is shown (grouping 100,000 failed targets takes most of a
        second), a page of their own without JavaScript."""
        who = session.need(request, "viewer")
        found = fleet.failure_groups(db, fleet.require_in_scope(db, _campaign_id(campaign_id), who.scope))
        fragment = bool(request.headers.get("hx-request"))
        return Template("_failures.html" if fragment else "failures.html", context={"failures": found})

    @post("/campaigns/{campaign_id:str}/{verb:str}", opt={"body": "form", "action": "campaign.change"}, status_code=303)
    def change(
        self, request: Request[Any, Any, Any], db: DB, campaign_id: FromPath[str], verb: FromPath[str]
    ) -> Response[Any]:
        who = session.need(request, "operator")
        act = ACTIONS.get(verb)
        if act is None:
            raise InvalidArgument(f"{verb[:20]!r} is not pause, resume or cancel", field="action")
        campaign = fleet.require_in_scope(db, _campaign_id(campaign_id), who.scope)
        act(db, campaign, actor=session.actor(request))
        return Redirect(f"{PREFIX}/campaigns/{campaign}", status_code=303)

    @get("/audit", opt=READ)
    def audit(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        actor: Query = "",
        action: Query = "",
        outcome: Query = "",
        target: Query = "",
        cursor: Query = "",
    ) -> Template:
        session.need(request, "admin", unscoped=True)
        if outcome and outcome not in ("success", "denied"):
            raise InvalidArgument("outcome is success or denied", field="outcome")
        rows = list_events(
            db,
            actor=actor.strip() or None,
            action=action.strip() or None,
            outcome=outcome or None,
            target=target.strip() or None,
            before=parse_cursor(cursor) if cursor else None,
            limit=PAGE + 1,
        )
        next_cursor = cursor_of(rows[PAGE - 1]) if len(rows) > PAGE else None
        filters = {"actor": actor, "action": action, "outcome": outcome, "target": target}
        return Template("audit.html", context={"rows": rows[:PAGE], "next_cursor": next_cursor, "f": filters})
