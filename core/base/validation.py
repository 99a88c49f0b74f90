"""Validation of identifiers and values shared by the helpers, the API and the CLI.

Every function raises :class:`core.base.errors.InvalidArgument` with the field name, before anything is written.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from datetime import date
from typing import Any

from core.base.errors import InvalidArgument

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._~:-]{1,255}")
ACTION_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
STATUS_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: an Android package name: dot-separated segments of ``[A-Za-z][A-Za-z0-9_]*``, at least two
PACKAGE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: a caller's digest of a payload, as the seed's helper accepts it (hex, base64, "sha256:..." and the like)
PAYLOAD_HASH_RE = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

MAX_PAYLOAD_BYTES = 4096


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def device_id(value: object, field: str = "device_id") -> str:
    if not isinstance(value, str) or not DEVICE_ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1-128 characters from A-Z a-z 0-9 . _ : - (got {_describe(value)})", field=field
        )
    return value


def request_id(value: object, field: str = "request_id") -> str:
    if not isinstance(value, str) or not REQUEST_ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1-255 characters from A-Z a-z 0-9 . _ ~ : - (got {_describe(value)})", field=field
        )
    return value


def action(value: object, allowed: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not ACTION_RE.fullmatch(value):
        raise InvalidArgument(f"action must be a lowercase word (got {_describe(value)})", field="action")
    if allowed is not None and value not in allowed:
        raise InvalidArgument(f"unknown action {value!r}; configured actions: {', '.join(allowed)}", field="action")
    return value


def sha256_hex(value: object, field: str = "payload_hash") -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise InvalidArgument(f"{field} must be 64 lowercase hex characters", field=field)
    return value


def payload_hash_value(value: object, field: str = "payload_hash") -> str:
    """A caller's digest of a payload: 1-128 characters from ``A-Z a-z 0-9 . _ : - + / =``.

    The API and the CLI always store :func:`payload_hash` (SHA-256 hex of the canonical JSON); the
    seed's helper takes whatever digest its caller uses (``payload_hash="abc123"`` in the seed's example).
    """
    if not isinstance(value, str) or not PAYLOAD_HASH_RE.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1-128 characters from A-Z a-z 0-9 . _ : - + / = (got {_describe(value)})", field=field
        )
    return value


def text(value: object, field: str, *, max_length: int, required: bool = False) -> str | None:
    """A printable string without control or bidi characters, or ``None`` when allowed."""
    if value is None:
        if required:
            raise InvalidArgument(f"{field} is required", field=field)
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a string", field=field)
    if required and not value:
        raise InvalidArgument(f"{field} must not be empty", field=field)
    if len(value) > max_length:
        raise InvalidArgument(f"{field} must be at most {max_length} characters", field=field)
    if _CONTROL_RE.search(value):
        raise InvalidArgument(f"{field} must not contain control characters", field=field)
    return value


def is_iso_date(value: object) -> bool:
    """``YYYY-MM-DD`` naming a real day."""
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def ip_address(value: object) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise InvalidArgument(f"ip must be an IPv4 or IPv6 address (got {_describe(value)})", field="ip") from None


def canonical_json(payload: Any) -> str:
    """Sorted keys, no whitespace: the form that ``payload_hash`` is computed over."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_hash(payload: dict[str, Any] | None) -> str:
    """SHA-256 hex of the payload's canonical JSON (``None`` hashes as ``null``)."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def free_of_controls(value: Any) -> bool:
    """Whether a JSON value's strings and keys, at any depth, hold no control or bidi characters (a NUL
    cannot be stored in PostgreSQL's JSON; an ESC would reach an operator's terminal)."""
    return not _has_control_string(value)


def _has_control_string(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_CONTROL_RE.search(value))
    if isinstance(value, dict):
        return any(_has_control_string(k) or _has_control_string(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_control_string(v) for v in value)
    return False


def payload(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument("payload must be a JSON object", field="payload")
    try:
        size = len(canonical_json(value).encode("utf-8"))
    except (TypeError, ValueError):
        raise InvalidArgument("payload must be plain JSON", field="payload") from None
    if _has_control_string(value):
        raise InvalidArgument("payload strings must not contain NUL or control characters", field="payload")
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"payload is {size} bytes serialized; FCM accepts at most {MAX_PAYLOAD_BYTES}", field="payload"
        )
    return value
