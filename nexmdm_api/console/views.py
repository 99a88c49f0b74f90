"""What the templates use beyond Jinja2's own: times, and each action's CLI line and curl call.

Every action on a page shows how to do the same from a shell (``nexmdm ...``) and over the admin API
(``curl ...`` with ``$NEXMDM_ADMIN_KEY``), built here once so that the pages never drift from the API.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from litestar.plugins.jinja import JinjaTemplateEngine

from core.base.clock import utcnow


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | None) -> str:
    """``42 s ago``, ``3 min ago``, ``5 h ago``, ``2 d ago``."""
    if value is None:
        return "never"
    seconds = max(0.0, (utcnow() - value).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def cli(*words: str) -> str:
    return " ".join(["nexmdm", *(shlex.quote(w) for w in words)])


def curl(method: str, path: str, body: dict[str, Any] | None = None) -> str:
    """The admin API call, with the server's public address as the docs write it."""
    parts = ["curl", "-X", method, '-H "Authorization: Bearer $NEXMDM_ADMIN_KEY"']
    if body is not None:
        parts += ["-H 'Content-Type: application/json'", "-d", shlex.quote(json.dumps(body, separators=(",", ":")))]
    parts.append(f'"$NEXMDM_URL{path}"')
    return " ".join(parts)


def campaign_action(campaign_id: str, verb: str) -> dict[str, str]:
    return {"cli": cli("campaigns", verb, campaign_id), "curl": curl("POST", f"/v1/campaigns/{campaign_id}/{verb}")}


def approval_action(approval_id: str, verb: str) -> dict[str, str]:
    return {"cli": cli("approvals", verb, approval_id), "curl": curl("POST", f"/v1/approvals/{approval_id}/{verb}")}


def label_action(device_id: str) -> dict[str, str]:
    return {
        "cli": cli("devices", "label", device_id, "KEY=VALUE") + "   # KEY- removes",
        "curl": curl("PATCH", f"/v1/devices/{device_id}/labels", {"set": {"KEY": "VALUE"}, "remove": []}),
    }


def read_action(words: list[str], path: str, params: dict[str, str]) -> dict[str, str]:
    """A listing's CLI line and API call, with the filters of the page (empty ones left out)."""
    given = {k: v for k, v in params.items() if v}
    flags = [word for key, value in given.items() for word in (f"--{key.replace('_', '-')}", value)]
    query = f"?{urlencode(given)}" if given else ""
    return {"cli": cli(*words, *flags), "curl": curl("GET", f"{path}{query}")}


def device_list_action(selector: str) -> dict[str, str]:
    return read_action(["devices", "list"], "/v1/devices", {"selector": selector})


def profile_apply_action() -> dict[str, str]:
    return {
        "cli": cli("profiles", "apply", "-f", "FILE") + "   # plan first: nexmdm profiles plan -f FILE",
        "curl": curl("POST", "/v1/profiles", {"name": "NAME", "settings": {}}),
    }


def profile_rollback_action(name: str, version: int) -> dict[str, str]:
    return {
        "cli": cli("profiles", "rollback", name, "--to-version", str(version)),
        "curl": curl("POST", f"/v1/profiles/{quote(name, safe='')}/rollback", {"to_version": version}),
    }


def as_json(value: Any, indent: int | None = None) -> str:
    """A JSON value as a person reads it (``"R&D <main>"``), left to autoescaping as any text: Jinja2's
    ``tojson`` is for ``<script>`` and shows ``<``, ``>``, ``&`` and ``'`` as ``\\u003c``-style escapes."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def narrowed(selector: str, *terms: str) -> str:
    """The devices listing's address for ``selector`` ANDed with ``terms`` (the compliance page's links)."""
    return "/console/devices?" + urlencode({"selector": ",".join([t for t in (selector, *terms) if t])})


def register_filters(engine: JinjaTemplateEngine) -> None:
    env = engine.engine
    env.filters.update({"when": when, "ago": ago, "as_json": as_json})
    env.globals["yes_no"] = yes_no
    env.globals.update(
        {
            "pct": pct,
            "campaign_action": campaign_action,
            "approval_action": approval_action,
            "label_action": label_action,
            "device_list_action": device_list_action,
            "read_action": read_action,
            "profile_apply_action": profile_apply_action,
            "profile_rollback_action": profile_rollback_action,
            "narrowed": narrowed,
        }
    )
