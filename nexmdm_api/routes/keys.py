"""Admin keys, for keys with the ``admin`` role only: create (the secret once), list, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Request
from litestar.params import JSONBody, Parameter

from core.access import keys as admin_keys
from nexmdm_api.auth import admin_actor, admin_route
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import allow
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import get, post
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_admin import KEY_NAME_PATTERN, KeyCreated, KeyIn, KeyOut, KeyPage

KeyCursor = Annotated[
    str | None, Parameter(description="`next_cursor` of the previous page (a key name)", pattern=KEY_NAME_PATTERN)
]
KeyNamePath = Annotated[str, Parameter(description="the key's name", schema_extra={"pattern": KEY_NAME_PATTERN})]


class KeyController(Controller):
    """Admin API keys: create, list, revoke."""

    path = "/v1/keys"
    tags = ["admin"]
    allowed = allow(path)  # GET and POST share the path

    @post(
        "/",
        summary="Create an admin key",
        description=(
            "`role`: `viewer`, `operator` or `admin` (default); `scope`: a selector that limits every device the key "
            "reaches (`store=42`); `expires_in_seconds`: after it the key is 401 `key_expired`. The answer carries "
            "the `secret`, once. A scoped key cannot manage keys (403 `out_of_scope`)."
        ),
        status_code=201,
        **admin_route("admin", body="json", action="key.create"),
        responses=problems(400, 401, 403, 409, 413, 415, 422, 429),
    )
    def create_key(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[KeyIn]) -> KeyCreated:
        secret, key = admin_keys.create_admin_key(
            db,
            name=data.name,
            role=data.role,
            scope=data.scope,
            expires_in=timedelta(seconds=data.expires_in_seconds) if data.expires_in_seconds else None,
            actor=admin_actor(request),
        )
        return convert(key | {"secret": secret}, KeyCreated)

    @get(
        "/",
        summary="List admin keys",
        description="Ordered by name; `next_cursor` is null on the last page. Secrets are never listed.",
        **admin_route("admin", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_keys(self, db: DB, limit: Limit = 100, cursor: KeyCursor = None) -> KeyPage:
        rows, next_cursor = keyset_page(lambda n: admin_keys.list_admin_keys(db, after=cursor, limit=n), limit, "name")
        return KeyPage(items=[convert(r, KeyOut) for r in rows], next_cursor=next_cursor)

    @post(
        "/{name:str}/revoke",
        summary="Revoke an admin key",
        description="Requests with it fail at once (a key may revoke itself). Names are never reused.",
        status_code=200,
        **admin_route("admin", action="key.revoke"),
        responses=problems(400, 401, 403, 404, 429),
    )
    def revoke_key(self, request: Request[Any, Any, Any], db: DB, name: KeyNamePath) -> KeyOut:
        return convert(admin_keys.revoke_admin_key(db, name, actor=admin_actor(request)), KeyOut)
