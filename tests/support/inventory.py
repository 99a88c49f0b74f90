"""Inventory documents for tests: a body with its hash, and a few apps."""

from __future__ import annotations

from typing import Any

from core.inventory.document import canonical_hash

DEVICE: dict[str, Any] = {
    "manufacturer": "samsung",
    "model": "Galaxy A10",
    "os_version": "11",
    "api_level": 30,
    "security_patch": "2026-05-01",
    "build_fingerprint": "samsung/a10/a10:11/RP1A/123:user/release-keys",
    "storage_total_mb": 32768,
    "storage_free_mb": 4096,
    "ram_mb": 2048,
    "agent_version": "2.1.0",
}


def app(package: str, version_code: int, **fields: Any) -> dict[str, Any]:
    return {"package": package, "version_code": version_code, "version_name": f"{version_code // 100}.0", **fields}


def body(device: dict[str, Any] | None = None, apps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A ``PUT /v1/inventory`` body with its correct hash."""
    device = dict(DEVICE if device is None else device)
    apps = list(apps or [])
    return {"hash": canonical_hash(device, apps), "device": device, "apps": apps}


APPS = [app("com.acme.pos", 4100), app("com.android.chrome", 12000, system=True), app("org.example.notes", 7)]
