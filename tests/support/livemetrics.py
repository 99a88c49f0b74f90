"""Reading a live ``/metrics``: samples by name and labels, and the metric families with their HELP."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Series name (``nexmdm_fcm_sends_total``, ``..._bucket``) → its samples."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def helps(text: str) -> dict[str, str]:
    """Family name as written on its ``# HELP`` line → the help text."""
    return dict(re.findall(r"^# HELP (\S+) (.*)$", text, flags=re.MULTILINE))


def value(text: str, name: str, **labels: str) -> float | None:
    for sample_labels, sample_value in samples(text).get(name, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return sample_value
    return None


def until(get: Callable[[], str], check: Callable[[str], bool], timeout: float = 30) -> str:
    """Scrape until ``check`` holds; returns that scrape."""
    deadline = time.monotonic() + timeout
    text: Any = ""
    while time.monotonic() < deadline:
        text = get()
        if check(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"/metrics never satisfied the check:\n{text}")
