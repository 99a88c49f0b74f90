"""Profile documents for tests, and a helper that applies one as the CLI would."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.events.audit import Actor
from core.profiles import store

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
