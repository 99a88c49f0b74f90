"""The app's routes as the role tests see them."""

from __future__ import annotations

from typing import Any

from litestar import Litestar


def admin_routes(app: Litestar) -> dict[tuple[str, str], Any]:
    """Every (method, path) of the app whose handler is an admin endpoint."""
    found = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if handler.opt.get("auth") != "admin":
                continue
            for method in handler.http_methods:
                found[(method, route.path)] = handler
    return found
