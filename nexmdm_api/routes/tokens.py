"""Enrollment tokens for admins: create (the secret is in the answer, once), list, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Request
from litestar.params import JSONBody, Parameter

from core.enrollment import tokens as credentials
from nexmdm_api.auth import admin_actor, admin_route
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import allow
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import get, post
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_admin import TokenCreated, TokenIn, TokenOut, TokenPage

TOKEN_ID_PATTERN = r"^enr_[0-9a-f]{12}$"  # noqa: S105 - an id pattern, not a secret
TokenCursor = Annotated[
    str | None, Parameter(description="`next_cursor` of the previous page (a token id)", pattern=TOKEN_ID_PATTERN)
]
TokenIdPath = Annotated[str, Parameter(description="the token's id", schema_extra={"pattern": TOKEN_ID_PATTERN})]


class TokenController(Controller):
    """Enrollment tokens: create, list, revoke."""

    path = "/v1/tokens"
    tags = ["admin"]
    allowed = allow(path)  # GET and POST share the path

    @post(
        "/",
        summary="Create an enrollment token",
        description="The answer carries the token's `secret`, once; it is never stored or shown again.",
        status_code=201,
        **admin_route("operator", body="json", action="token.create"),
        responses=problems(400, 401, 403, 413, 415, 422, 429),
    )
    def create_token(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[TokenIn]) -> TokenCreated:
        secret, token = credentials.create_enrollment_token(
            db,
            uses=data.uses,
            expires_in=timedelta(seconds=data.expires_in_seconds),
            note=data.note,
            labels=data.labels,
            actor=admin_actor(request),
        )
        return convert(token | {"secret": secret}, TokenCreated)

    @get(
        "/",
        summary="List enrollment tokens",
        description="Ordered by id; `next_cursor` is null on the last page. Secrets are never listed.",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_tokens(self, db: DB, limit: Limit = 100, cursor: TokenCursor = None) -> TokenPage:
        rows, next_cursor = keyset_page(
            lambda n: credentials.list_enrollment_tokens(db, after=cursor, limit=n), limit, "id"
        )
        return TokenPage(items=[convert(r, TokenOut) for r in rows], next_cursor=next_cursor)

    @post(
        "/{token_id:str}/revoke",
        summary="Revoke an enrollment token",
        description="No further device can enroll with it; enrolled devices are unaffected. Repeating it is 200.",
        status_code=200,
        **admin_route("operator", action="token.revoke"),
        responses=problems(400, 401, 403, 404, 429),
    )
    def revoke_token(self, request: Request[Any, Any, Any], db: DB, token_id: TokenIdPath) -> TokenOut:
        return convert(credentials.revoke_enrollment_token(db, token_id, actor=admin_actor(request)), TokenOut)
