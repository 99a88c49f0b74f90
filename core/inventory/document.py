"""The inventory document a device reports: its checks and its canonical hash (no SQL here).

A document is ``{"device": {...}, "apps": [...]}``. Its hash is the SHA-256 hex of the canonical form:
``{"device", "apps"}`` with the apps sorted by package and every key whose value is ``null`` left out
(absent and ``null`` mean the same), written with ``json.dumps(sort_keys=True, separators=(",", ":"))``.
Every check raises :class:`InvalidArgument` naming the field (``apps[3].version_code``) before anything
is written; no value of the document ever appears in a message or a log line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.base.errors import InvalidArgument
from core.base.validation import PACKAGE_RE, is_iso_date, sha256_hex, text

MAX_APPS = 2000
#: the body limit of ``PUT``/``PATCH /v1/inventory``
MAX_BODY_BYTES = 1024 * 1024
MAX_PACKAGE = 255
_SHA256_RE = re.compile(r"[0-9A-Fa-f]{64}")
#: a version code is Android's ``long``; more does not fit the column
MAX_VERSION_CODE = 2**63 - 1
MAX_INT = 2**53


def _text(limit: int) -> Callable[[object, str], Any]:
    def check(value: object, field: str) -> Any:
        return text(value, field, max_length=limit)

    return check


def _whole(low: int, high: int) -> Callable[[object, str], Any]:
    """A whole number from ``low`` to ``high`` (``true`` is not 1)."""
    wording = f"a whole number >= {low}" if high >= MAX_INT else f"a whole number from {low} to {high}"

    def check(value: object, field: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidArgument(f"{field} must be {wording}", field=field)
        return value

    return check


def _patch_date(value: object, field: str) -> Any:
    if not is_iso_date(value):
        raise InvalidArgument(f"{field} must be a date YYYY-MM-DD", field=field)
    return value


def _flag(value: object, field: str) -> Any:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{field} must be true or false", field=field)
    return value


def _signing(value: object, field: str) -> Any:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise InvalidArgument(f"{field} must be 64 hex characters (a SHA-256)", field=field)
    return value


def check_package(value: object, field: str) -> str:
    """A package name by Android's rule; raises ``InvalidArgument`` naming ``field``."""
    if not isinstance(value, str) or len(value) > MAX_PACKAGE or not PACKAGE_RE.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be a package name: at least two dot-separated segments of [A-Za-z][A-Za-z0-9_]*, "
            f"at most {MAX_PACKAGE} characters",
            field=field,
        )
    return value


#: device field -> check (every field optional; ``null`` is the same as absent)
DEVICE_FIELDS: dict[str, Callable[[object, str], Any]] = {
    "manufacturer": _text(128),
    "model": _text(128),
    "os_version": _text(64),
    "api_level": _whole(1, 1000),
    "security_patch": _patch_date,
    "build_fingerprint": _text(256),
    "storage_total_mb": _whole(0, MAX_INT),
    "storage_free_mb": _whole(0, MAX_INT),
    "ram_mb": _whole(0, MAX_INT),
    "agent_version": _text(64),
    "serial": _text(128),
}
#: app field -> check (``package`` and ``version_code`` are required)
APP_FIELDS: dict[str, Callable[[object, str], Any]] = {
    "package": check_package,
    "version_code": _whole(0, MAX_VERSION_CODE),
    "version_name": _text(64),
    "installer": _text(255),
    "system": _flag,
    "enabled": _flag,
    "signing_sha256": _signing,
}


def _object(value: object, field: str, allowed: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{field} must be an object", field=field)
    for key in value:
        if key not in allowed:
            name = key if isinstance(key, str) and len(key) <= 64 else "?"
            raise InvalidArgument(f"{field}.{name} is not a known field", field=f"{field}.{name}")
    out: dict[str, Any] = {}
    for key, check in allowed.items():
        item = value.get(key)
        if item is not None:
            out[key] = check(item, f"{field}.{key}")
    return out


def check_device(value: object, field: str = "device") -> dict[str, Any]:
    """The device fields, checked; ``null`` ones left out."""
    return _object(value, field, DEVICE_FIELDS)


def check_app(value: object, field: str) -> dict[str, Any]:
    """One app, checked; ``null`` optional fields left out."""
    app = _object(value, field, APP_FIELDS)
    for required in ("package", "version_code"):
        if required not in app:
            raise InvalidArgument(f"{field}.{required} is required", field=f"{field}.{required}")
    return app


def check_apps(value: object, field: str = "apps") -> dict[str, dict[str, Any]]:
    """A list of apps, checked: at most ``MAX_APPS``, one entry per package; returns them by package."""
    if not isinstance(value, list):
        raise InvalidArgument(f"{field} must be a list", field=field)
    if len(value) > MAX_APPS:
        raise InvalidArgument(f"{field} holds at most {MAX_APPS} apps", field=field)
    apps: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(value):
        app = check_app(item, f"{field}[{i}]")
        if app["package"] in apps:
            raise InvalidArgument(f"{field}[{i}].package appears twice", field=f"{field}[{i}].package")
        apps[app["package"]] = app
    return apps


def check_hash(value: object, field: str) -> str:
    return sha256_hex(value, field)


def canonical_hash(device: Mapping[str, Any], apps: Mapping[str, Mapping[str, Any]] | list[Mapping[str, Any]]) -> str:
    """SHA-256 hex of the canonical document (apps sorted by package, ``null`` values left out)."""
    entries = list(apps.values()) if isinstance(apps, Mapping) else list(apps)
    document = {
        "device": {k: v for k, v in device.items() if v is not None},
        "apps": [
            {k: v for k, v in app.items() if v is not None} for app in sorted(entries, key=lambda a: a["package"])
        ],
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


class HashMismatch(InvalidArgument):
    """The document's ``hash`` is not the hash of its content (422; nothing written)."""

    code = "inventory_hash_mismatch"


@dataclass(frozen=True)
class Report:
    """A checked full report: the device's fields and apps by package, and their hash."""

    hash: str
    device: dict[str, Any]
    apps: dict[str, dict[str, Any]]


def check_report(body: object) -> Report:
    """A ``PUT /v1/inventory`` body, checked, its hash verified."""
    if not isinstance(body, Mapping):
        raise InvalidArgument("the body must be a JSON object", field="body")
    for key in body:
        if key not in ("hash", "device", "apps"):
            name = key if isinstance(key, str) and len(key) <= 64 else "?"
            raise InvalidArgument(f"{name} is not a known field", field=name)
    claimed = check_hash(body.get("hash"), "hash")
    device = check_device(body.get("device", {}))
    apps = check_apps(body.get("apps", []))
    if canonical_hash(device, apps) != claimed and _as_sent_hash(body) != claimed:
        raise HashMismatch("hash is not the SHA-256 of the canonical document", field="hash")
    return Report(claimed, device, apps)


def _as_sent_hash(body: Mapping[str, Any]) -> str:
    """The hash of the document exactly as sent, ``null`` values kept (apps sorted by package): a device that
    sends its nulls may hash them too. Read only when the canonical hash did not match."""
    apps = sorted(body.get("apps", []), key=lambda app: app["package"])
    document = {"device": body.get("device", {}), "apps": apps}
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Delta:
    """A checked ``PATCH``: the base it applies to, the hash it claims, changed fields, upserts, removals."""

    base_hash: str
    hash: str
    device: dict[str, Any]
    #: device fields the delta sets to ``null`` (removed)
    cleared: frozenset[str]
    upsert: dict[str, dict[str, Any]]
    remove: frozenset[str]


def check_delta(body: object) -> Delta:
    """A ``PATCH /v1/inventory`` body, checked (its hash is verified once applied to the held inventory)."""
    if not isinstance(body, Mapping):
        raise InvalidArgument("the body must be a JSON object", field="body")
    for key in body:
        if key not in ("base_hash", "hash", "device", "apps"):
            name = key if isinstance(key, str) and len(key) <= 64 else "?"
            raise InvalidArgument(f"{name} is not a known field", field=name)
    base = check_hash(body.get("base_hash"), "base_hash")
    claimed = check_hash(body.get("hash"), "hash")
    raw_device = body.get("device") or {}
    device = check_device(raw_device)
    cleared = frozenset(k for k, v in raw_device.items() if v is None)
    changes = body.get("apps") or {}
    if not isinstance(changes, Mapping):
        raise InvalidArgument("apps must be an object with upsert and remove", field="apps")
    for key in changes:
        if key not in ("upsert", "remove"):
            name = key if isinstance(key, str) and len(key) <= 64 else "?"
            raise InvalidArgument(f"apps.{name} is not a known field", field=f"apps.{name}")
    upsert = check_apps(changes.get("upsert") or [], "apps.upsert")
    removals = changes.get("remove") or []
    if not isinstance(removals, list) or len(removals) > MAX_APPS:
        raise InvalidArgument(f"apps.remove must be a list of at most {MAX_APPS} packages", field="apps.remove")
    remove = frozenset(check_package(p, f"apps.remove[{i}]") for i, p in enumerate(removals))
    both = remove & set(upsert)
    if both:
        raise InvalidArgument("a package is both upserted and removed", field="apps.remove")
    return Delta(base, claimed, device, cleared, upsert, remove)
