"""Reliability fixtures: the API fixtures of ``tests/api`` (``client``, credentials), shared here.

pytest only applies a ``conftest.py`` to its own folder, so the API fixtures are imported, not copied.
"""

from __future__ import annotations

from tests.api.conftest import admin, admin_key, api_settings, auth, client, enroll, make_token

__all__ = ["admin", "admin_key", "api_settings", "auth", "client", "enroll", "make_token"]
