"""The label syntax (Kubernetes' rules): keys, values, a device's label mapping and kubectl's ``key=value``/``key-``.

Pure checks, no SQL: selectors, enrollment tokens and the label writes of :mod:`core.devices.labels` share them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from core.base.errors import InvalidArgument

MAX_LABELS = 32
_NAME = r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?"
KEY_RE = re.compile(rf"({_NAME}/)?{_NAME}")
VALUE_RE = re.compile(r"[A-Za-z0-9._:-]{0,63}")


def label_key(key: object) -> str:
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise InvalidArgument(
            f"label key {key!r} must be 1-63 characters from a-z 0-9 . _ - starting and ending with a letter or "
            "digit, with an optional prefix/ of the same form",
            field="labels",
        )
    return key


def label_value(value: object, key: str = "") -> str:
    if not isinstance(value, str) or not VALUE_RE.fullmatch(value):
        raise InvalidArgument(
            f"label value {value!r}{f' of {key!r}' if key else ''} must be 0-63 characters from A-Z a-z 0-9 . _ : -",
            field="labels",
        )
    return value


def validate_labels(labels: Mapping[str, Any] | None) -> dict[str, str]:
    """A label mapping checked key by key (at most 32)."""
    labels = labels or {}
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels per device", field="labels")
    return {label_key(k): label_value(v, k) for k, v in labels.items()}


def parse_label_args(args: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """kubectl's syntax: ``key=value`` sets, ``key-`` removes; returns ``(set, remove)``."""
    to_set: dict[str, str] = {}
    remove: list[str] = []
    for arg in args:
        if "=" in arg:
            key, value = arg.split("=", 1)
            to_set[label_key(key)] = label_value(value, key)
        elif arg.endswith("-"):
            remove.append(label_key(arg[:-1]))
        else:
            raise InvalidArgument(f"{arg!r}: write key=value to set a label or key- to remove one", field="labels")
    both = set(to_set) & set(remove)
    if both:
        raise InvalidArgument(f"label {sorted(both)[0]!r} is both set and removed", field="labels")
    return to_set, remove
