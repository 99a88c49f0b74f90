"""The simulated devices apply their effective profile and report per-item status (``nexmdm simulate``, the
reference agent; docs/device-protocol.md, "Profile").

A simulated device installs (or updates to ``min_version_code``) its ``required`` apps, except those naming a
``build``: those it reports noncompliant until the server's ``install_apk`` of the build arrives (the
profile's remediation; ``--build`` says what a build installs). It removes its ``blocked`` apps, applies
every setting, and reports each item; it cannot change its OS, so an ``os`` minimum above its API level or
patch is ``noncompliant``. A ``--fail`` rule on ``install_apk`` makes the
install fail (the app stays as it was, the item says why): compliance then shows the failure, as it would
for a real fleet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nexmdm_cli import simulation_faults as faults
from nexmdm_cli.sim_inventory import SimInventory


def _app_item(inventory: SimInventory, app: dict[str, Any], failed: str | None) -> dict[str, Any]:
    key, package = f"apps/{app['package']}", app["package"]
    held = inventory.apps.get(package)
    if app["install"] == "blocked":
        inventory.apps.pop(package, None)
        return {"key": key, "state": "compliant"}
    if app["install"] == "available":
        return {"key": key, "state": "compliant"}
    wanted = app.get("min_version_code") or 1
    if held is not None and held["version_code"] >= wanted:
        return {"key": key, "state": "compliant"}
    reason = "APP_NOT_INSTALLED" if held is None else "APP_NOT_UPDATED"
    if failed is not None:
        return {"key": key, "state": "noncompliant", "reason": reason, "detail": failed}
    if app.get("build") is not None:  # it comes from that build: the server's install_apk (its remediation)
        return {"key": key, "state": "noncompliant", "reason": reason, "detail": f"waiting for build {app['build']}"}
    inventory.install(package, wanted)
    return {"key": key, "state": "compliant"}


def _os_item(inventory: SimInventory, os_: dict[str, Any]) -> dict[str, Any]:
    level, patch = os_.get("min_api_level"), os_.get("min_security_patch")
    if level is not None and inventory.device.get("api_level", 0) < level:
        return {"key": "os", "state": "noncompliant", "reason": "API_LEVEL"}
    if patch is not None and inventory.device.get("security_patch", "") < patch:
        return {"key": "os", "state": "noncompliant", "reason": "OS_NOT_PERMITTED"}
    return {"key": "os", "state": "compliant"}


def apply(
    inventory: SimInventory, document: dict[str, Any], rules: tuple[faults.FailRule, ...] = ()
) -> list[dict[str, Any]]:
    """Apply an effective profile to the device's inventory; returns the status items to report."""
    failed = faults.failure(rules, inventory.device, "install_apk")
    items = [_app_item(inventory, app, failed) for app in document.get("apps", [])]
    items += [{"key": f"settings/{key}", "state": "compliant"} for key in document.get("settings", {})]
    if "agent" in document:
        items.append({"key": "agent", "state": "compliant"})
    if "os" in document:
        items.append(_os_item(inventory, document["os"]))
    if "heartbeat_seconds" in document:
        items.append({"key": "heartbeat_seconds", "state": "compliant"})
    return items


async def fetch_and_apply(
    call: Callable[..., Awaitable[tuple[int, Any] | None]],
    client: Any,
    headers: dict[str, str],
    inventory: SimInventory,
    rules: tuple[faults.FailRule, ...],
    on_judged: Callable[[str, str], None] | None = None,
) -> None:
    """A heartbeat answer named another profile: fetch it, apply it, report the inventory it left (``PUT``),
    then each item (``POST /v1/profile/status``). ``call`` is the simulation's request function;
    ``on_judged(effective_hash, state)`` hears the state the server judged from a stored report."""
    answer = await call(client, "GET /v1/profile", "GET", "/v1/profile", headers=headers)
    if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
        return
    digest, document = answer[1].get("effective_hash"), answer[1].get("document")
    if digest is None or document is None:
        inventory.profile = None
        return
    items = apply(inventory, document, rules)
    put = inventory.document()
    stored = await call(client, "PUT /v1/inventory", "PUT", "/v1/inventory", json=put, headers=headers)
    if stored is not None and stored[0] == 200:
        inventory.reported = put["hash"]
    status = {"effective_hash": digest, "items": items}
    sent = await call(client, "POST /v1/profile/status", "POST", "/v1/profile/status", json=status, headers=headers)
    if sent is not None and sent[0] == 200:
        inventory.profile = digest
        if on_judged is not None and isinstance(sent[1], dict):
            on_judged(digest, str(sent[1].get("state")))
