"""How simulated devices fail and what their installs change: failure rules and ``install_apk``.

A failure rule (``--fail 'model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE'``) makes the devices whose
inventory (``nexmdm_cli.sim_inventory``: model, manufacturer, OS version) matches ack that action
``failed`` with that error code (the code a failure group shows). A simulated ``install_apk`` of a
build named with ``--build ID=PACKAGE:VERSION_CODE`` (what a real agent reads from the APK's manifest)
installs that version in the device's inventory, answers it as the ack's result and reports it at once
(``PUT /v1/inventory``), so an outcome-gated campaign (``--until '@app(com.acme.pos)>=4200'``) succeeds end
to end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.base.errors import InvalidArgument

RULE_FIELDS = ("model", "manufacturer", "os_version")
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_ACTION = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class FailRule:
    """Devices whose ``field`` is ``value`` ack ``action`` as failed with ``code``."""

    field: str
    value: str
    action: str
    code: str

    def matches(self, device: dict[str, Any], action: str) -> bool:
        return action == self.action and str(device.get(self.field)) == self.value


def parse_rule(text: str) -> FailRule:
    """``FIELD=VALUE:ACTION:CODE`` (the value may hold spaces, not ``:``); anything else is a usage error."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or "=" not in parts[0]:
        raise InvalidArgument(
            f"--fail takes FIELD=VALUE:ACTION:CODE such as 'model=Galaxy A10:install_apk:INSUFFICIENT_STORAGE' "
            f"(got {text!r})",
            field="--fail",
        )
    condition, action, code = parts
    field, value = (s.strip() for s in condition.split("=", 1))
    if field not in RULE_FIELDS:
        raise InvalidArgument(f"--fail field must be one of {', '.join(RULE_FIELDS)} (got {field!r})", field="--fail")
    if not value or not _ACTION.fullmatch(action) or not _CODE.fullmatch(code):
        raise InvalidArgument(
            f"--fail needs a value, an action (ping, install_apk...) and an error code in upper case (got {text!r})",
            field="--fail",
        )
    from core.commands.action_schemas import ERROR_CODES

    if code not in ERROR_CODES:
        raise InvalidArgument(f"--fail's error code is one of {', '.join(ERROR_CODES)} (got {code!r})", field="--fail")
    return FailRule(field, value, action, code)


def failure(rules: tuple[FailRule, ...], device: dict[str, Any], action: str) -> str | None:
    """The error code this device acks ``action`` with, or None when it succeeds."""
    return next((rule.code for rule in rules if rule.matches(device, action)), None)


def installed(command: dict[str, Any], builds: dict[int, tuple[str, int]]) -> tuple[str, int] | None:
    """``(package, version_code)`` a completed ``install_apk`` puts on the device, when its build is known."""
    payload = command.get("payload") or {}
    if command.get("action") != "install_apk":
        return None
    return builds.get(payload.get("build_id"))  # type: ignore[arg-type]


def parse_build(text: str) -> tuple[int, tuple[str, int]]:
    """``ID=PACKAGE:VERSION_CODE`` (``--build 1=com.acme.pos:4200``): what an APK build installs."""
    build, _, rest = text.partition("=")
    package, _, code = rest.rpartition(":")
    if not build.isdigit() or not package or not code.isdigit():
        raise InvalidArgument(
            f"--build takes ID=PACKAGE:VERSION_CODE such as 1=com.acme.pos:4200 (got {text!r})", field="--build"
        )
    return int(build), (package, int(code))
