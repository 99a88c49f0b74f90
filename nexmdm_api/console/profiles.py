"""The console's profile and compliance pages: profiles (a list; one profile's versions, current document
and a version's diff against the one before) and the fleet's compliance (devices per state, grouped by
reason, profile and model, each count linked to the devices listing filtered by its selector).

Each page calls the core function the admin API's route calls (``core.profiles.store.list_profiles``,
``history``, ``show``, ``core.profiles.document.diff``; ``core.profiles.compliance.summary``) with its least
role, viewer. Profiles reach the whole fleet: like ``/v1/profiles`` for scoped keys, the profile pages are
closed to scoped people (403). Compliance counts are limited to a scoped person's devices in SQL, as
``/v1/compliance`` is for a scoped key. The pages only read: changes are the CLI line and the API call shown.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core.base.errors import InvalidArgument
from core.devices import compliance_terms
from core.profiles import compliance, store
from core.profiles.document import diff
from nexmdm_api.console import session
from nexmdm_api.console.session import PREFIX
from nexmdm_api.db import DB
from nexmdm_api.routes.base import get

READ = {"readonly": True}
#: how the compliance page groups the counts, as ``GET /v1/compliance?by=`` (``reason``: its own route)
GROUPINGS = ("profile", "model")


def _version(value: str) -> int | None:
    """``?version=N`` (1 <= N < 2**31, as the API's parameter); empty: the current version."""
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 10) or not 1 <= int(value) < 2**31:
        raise InvalidArgument("version must be a version number", field="version")
    return int(value)


def _selector_error(exc: InvalidArgument) -> dict[str, Any]:
    """A selector that does not parse, as the devices page shows it (the message, a caret at the position)."""
    return {"message": exc.message, "position": getattr(exc, "position", None)}


class ProfilePages(Controller):
    """Profiles, a profile, compliance."""

    path = PREFIX
    include_in_schema = False

    @get("/profiles", opt=READ)
    def profile_list(self, request: Request[Any, Any, Any], db: DB) -> Template:
        session.need(request, "viewer", unscoped=True)
        return Template("profiles.html", context={"rows": store.list_profiles(db)})

    @get("/profiles/{name:str}", opt=READ)
    def profile(
        self, request: Request[Any, Any, Any], db: DB, name: FromPath[str], version: FromQuery[str] = ""
    ) -> Template:
        session.need(request, "viewer", unscoped=True)
        current = store.show(db, name)
        viewed = store.show(db, name, _version(version)) if version else current
        previous = store.show(db, name, viewed["version"] - 1)["document"] if viewed["version"] > 1 else None
        context = {
            "profile": current,
            "viewed": viewed,
            "changes": diff(previous, viewed["document"]),
            "history": store.history(db, name),
        }
        return Template("profile.html", context=context)

    @get("/compliance", opt=READ)
    def compliance_page(self, request: Request[Any, Any, Any], db: DB, selector: FromQuery[str] = "") -> Template:
        """Devices per state, per profile and per model; the reasons follow from ``/compliance/reasons``."""
        who = session.need(request, "viewer")
        settings = request.app.state.settings
        context: dict[str, Any] = {"selector": selector, "error": None, "summary": None, "groups": {}}
        try:
            for by in GROUPINGS:  # each answer has the counts per state too: the first one's are shown
                grouped = compliance.summary(db, settings, selector=selector or None, by=by, scope=who.scope)
                context["summary"] = context["summary"] or grouped
                context["groups"][by] = grouped["groups"]
        except InvalidArgument as exc:
            context["error"] = _selector_error(exc)
        return Template("compliance.html", context=context | {"states": compliance_terms.STATES})

    @get("/compliance/reasons", opt=READ)
    def compliance_reasons(self, request: Request[Any, Any, Any], db: DB, selector: FromQuery[str] = "") -> Template:
        """The noncompliant devices per reason (``GET /v1/compliance?by=reason``): a count per reason, most of a
        second at 100,000 devices on PostgreSQL, so loaded by htmx into the compliance page after it is shown,
        and a page of its own without JavaScript."""
        who = session.need(request, "viewer")
        settings = request.app.state.settings
        context: dict[str, Any] = {"selector": selector, "error": None, "groups": []}
        try:
            grouped = compliance.summary(db, settings, selector=selector or None, by="reason", scope=who.scope)
            context["groups"] = grouped["groups"]
        except InvalidArgument as exc:
            context["error"] = _selector_error(exc)
        fragment = bool(request.headers.get("hx-request"))
        return Template("_reasons.html" if fragment else "compliance_reasons.html", context=context)
