"""A profile document: parsed from YAML or JSON, validated strictly, normalized, hashed, and split into keys.

::

    {"name", "selector", "priority": int,
     "apps": [{"package", "install": "required"|"blocked"|"available", "min_version_code"?, "build"?,
               "managed_config"?: object}],
     "agent": {"min_version"?}, "os": {"min_api_level"?, "min_security_patch"?},
     "settings": {key: any JSON value}, "heartbeat_seconds"?}

An unknown key anywhere is refused with its path (``apps[2].instal``); the selector is parsed by the one
selector compiler (``core.devices.selectors``) and may not name what changes without anyone acting (a
device's state, battery, network) or compliance itself (a profile would then depend on itself). The
*keys* of a document are what layering merges and what a tie compares: ``apps/PACKAGE``,
``settings/KEY``, ``agent``, ``os`` and ``heartbeat_seconds``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from core.base.errors import InvalidArgument
from core.base.validation import PACKAGE_RE, canonical_json, free_of_controls, is_iso_date, payload_hash
from core.base.versions import version_key
from core.devices import selectors

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_APPS = 2000
MAX_SETTINGS = 1000
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
SETTING_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
INSTALL = ("required", "blocked", "available")
#: selector fields a profile may not use: they change by themselves (every heartbeat), or they are the
#: compliance the profile itself decides
UNSELECTABLE = ("@state", "@battery_pct", "@plugged", "@network_type", "@agent_version", "@compliance", "@noncompliant")
_TOP = {"name", "selector", "priority", "apps", "agent", "os", "settings", "heartbeat_seconds"}
_APP = {"package", "install", "min_version_code", "build", "managed_config"}
_AGENT = {"min_version"}
_OS = {"min_api_level", "min_security_patch"}
PRIORITY_RANGE = (-1_000_000, 1_000_000)


_CONTROLS = "its text (keys too, at any depth) holds no control characters"


def _fail(path: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {message}", field=path)


def _object(value: Any, path: str, allowed: set[str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "must be an object")
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path != "$" else str(key)
            raise _fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in value:
            raise _fail(f"{path}.{key}" if path != "$" else key, "is required")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(path, f"must be a whole number from {low} to {high}")
    return value


def _depth(value: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _depth(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _depth(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, float) and value != value:  # NaN
        raise _fail(path, "must be a JSON value")


def loads(text: str | bytes, *, filename: str | None = None) -> dict[str, Any]:
    """Parse a document (JSON, or YAML when the name ends in .yaml/.yml or the text is not JSON)."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise InvalidArgument(f"a profile is at most {MAX_BYTES // 1024} KiB", field="$")
    decoded = raw.decode("utf-8", errors="strict")
    try:
        value = json.loads(decoded)
    except json.JSONDecodeError as json_error:
        import yaml  # only a YAML document pays for the import

        try:
            value = yaml.safe_load(decoded)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            kind = "YAML" if filename is None or not filename.endswith(".json") else "JSON"
            detail = json_error.msg if kind == "JSON" else str(getattr(exc, "problem", exc))
            raise InvalidArgument(f"the profile is not valid {kind}{where}: {detail}", field="$") from None
    if not isinstance(value, dict):
        raise InvalidArgument("a profile is an object (a mapping)", field="$")
    return value


def check(value: Any) -> dict[str, Any]:
    """Validate a document and return it normalized (defaults filled, apps sorted by package)."""
    doc = _object(value, "$", _TOP, ("name",))
    _depth(doc, "$")
    name = doc["name"]
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _fail("name", "1-63 of a-z 0-9 . _ -, starting and ending with a letter or digit")
    selector_text = _selector(doc.get("selector", ""))
    out: dict[str, Any] = {
        "name": name,
        "selector": selector_text,
        "priority": _int(doc.get("priority", 0), "priority", *PRIORITY_RANGE),
        "apps": _apps(doc.get("apps", [])),
        "settings": _settings(doc.get("settings", {})),
    }
    out.update(_agent_os(doc))
    if "heartbeat_seconds" in doc:
        out["heartbeat_seconds"] = _int(doc["heartbeat_seconds"], "heartbeat_seconds", 10, 86_400)
    return out


def _selector(text: Any) -> str:
    if not isinstance(text, str):
        raise _fail("selector", "must be a string")
    try:
        parsed = selectors.parse(text)
    except selectors.InvalidSelector as exc:
        raise _fail("selector", exc.message) from None
    for term in parsed.terms:
        if term.name in UNSELECTABLE:
            raise _fail("selector", f"a profile cannot select on {term.name}: it changes without the profile")
    return parsed.text


def _agent_os(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "agent" in doc:
        agent = _object(doc["agent"], "agent", _AGENT)
        if "min_version" in agent:
            version = agent["min_version"]
            if not isinstance(version, str) or len(version) > 64 or version_key(version) is None:
                raise _fail("agent.min_version", "must be a version such as 2.1.0")
        out["agent"] = dict(agent)
    if "os" in doc:
        os_ = _object(doc["os"], "os", _OS)
        if "min_api_level" in os_:
            _int(os_["min_api_level"], "os.min_api_level", 1, 1000)
        if "min_security_patch" in os_ and not is_iso_date(os_["min_security_patch"]):
            raise _fail("os.min_security_patch", "must be a date YYYY-MM-DD")
        out["os"] = dict(os_)
    return out


def _apps(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _fail("apps", "must be a list")
    if len(value) > MAX_APPS:
        raise _fail("apps", f"at most {MAX_APPS} apps")
    apps: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(value):
        path = f"apps[{i}]"
        app = _object(item, path, _APP, ("package", "install"))
        package = app["package"]
        if not isinstance(package, str) or len(package) > 255 or not PACKAGE_RE.fullmatch(package):
            raise _fail(f"{path}.package", "must be a package name such as com.acme.pos")
        if package in apps:
            raise _fail(f"{path}.package", f"{package} is listed twice")
        if app["install"] not in INSTALL:
            raise _fail(f"{path}.install", f"must be one of {', '.join(INSTALL)}")
        if "min_version_code" in app:
            if app["install"] == "blocked":
                raise _fail(f"{path}.min_version_code", "a blocked app has no minimum version")
            _int(app["min_version_code"], f"{path}.min_version_code", 0, 2**63 - 1)
        if "build" in app:
            _int(app["build"], f"{path}.build", 1, 2**63 - 1)
        if "managed_config" in app and not isinstance(app["managed_config"], dict):
            raise _fail(f"{path}.managed_config", "must be an object")
        if "managed_config" in app and not free_of_controls(app["managed_config"]):
            raise _fail(f"{path}.managed_config", _CONTROLS)
        apps[package] = dict(app)
    return [apps[p] for p in sorted(apps)]


def _settings(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail("settings", "must be an object")
    if len(value) > MAX_SETTINGS:
        raise _fail("settings", f"at most {MAX_SETTINGS} settings")
    for key in value:
        if not isinstance(key, str) or not SETTING_KEY_RE.fullmatch(key):
            raise _fail(f"settings.{key}", "a setting key is 1-128 of A-Z a-z 0-9 . _ -")
        if not free_of_controls(value[key]):
            raise _fail(f"settings.{key}", _CONTROLS)
    return dict(sorted(value.items()))


def sha256(document: dict[str, Any]) -> str:
    """The hash of a normalized document (canonical JSON)."""
    return payload_hash(document)


def keys(document: dict[str, Any]) -> dict[str, Any]:
    """The document's mergeable keys and their values: ``apps/P``, ``settings/K``, ``agent``, ``os``, ..."""
    out: dict[str, Any] = {f"apps/{a['package']}": a for a in document.get("apps", [])}
    out.update({f"settings/{k}": v for k, v in document.get("settings", {}).items()})
    for key in ("agent", "os", "heartbeat_seconds"):
        if key in document:
            out[key] = document[key]
    return out


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Per key (and for ``selector``/``priority``): ``{"key", "old", "new"}`` where they differ."""
    before = {} if old is None else {"selector": old["selector"], "priority": old["priority"], **keys(old)}
    after = {"selector": new["selector"], "priority": new["priority"], **keys(new)}
    out = []
    for key in sorted(set(before) | set(after)):
        if canonical_json(before.get(key)) != canonical_json(after.get(key)):
            out.append({"key": key, "old": before.get(key), "new": after.get(key)})
    return out
