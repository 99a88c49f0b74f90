"""Profile documents for tests, a helper that applies one as the CLI would, and a noncompliant device."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.events.audit import Actor
from core.models import Device
from core.profiles import compliance, effective, store

ACTOR = Actor("cli:test@host")


def profile(name: str, selector: str = "", priority: int = 0, **parts: Any) -> dict[str, Any]:
    return {"name": name, "selector": selector, "priority": priority, **parts}


def required(package: str, min_version_code: int | None = None) -> dict[str, Any]:
    app: dict[str, Any] = {"package": package, "install": "required"}
    if min_version_code is not None:
        app["min_version_code"] = min_version_code
    return app


def blocked(package: str) -> dict[str, Any]:
    return {"package": package, "install": "blocked"}


def apply(factory: sessionmaker[Session], settings: Settings, document: dict[str, Any]) -> dict[str, Any]:
    with factory.begin() as db:
        return store.apply(db, settings, document, ACTOR)


def noncompliant_a1(factory: sessionmaker[Session], settings: Settings) -> None:
    """Two versions of ``pos`` (store 42, a hostile setting value in the second), then a1 reports its wifi wrong."""
    apply(factory, settings, profile("pos", "store=42", priority=5, settings={"wifi": {"ssid": "corp"}}))
    hostile = {"wifi": {"ssid": "shop"}, "motd": "<script>alert(1)</script>"}
    apply(factory, settings, profile("pos", "store=42", priority=5, settings=hostile))
    with factory.begin() as db:
        device = db.get(Device, "a1")
        assert device is not None
        effective.refresh_device(db, settings, "a1")
        db.refresh(device, ["effective_hash"])
        items = [
            {"key": "settings/wifi", "state": "noncompliant", "reason": "INVALID_VALUE"},
            {"key": "settings/motd", "state": "compliant"},
        ]
        compliance.report(db, settings, device, {"effective_hash": device.effective_hash, "items": items})
