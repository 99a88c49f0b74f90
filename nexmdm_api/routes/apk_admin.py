"""APK builds and their download audit for admins (the lists ``nexmdm apk list`` and ``apk downloads`` show)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.params import Parameter

from core.apk import builds as apk
from nexmdm_api.auth import admin_route
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.schemas import ApkBuildOut, convert
from nexmdm_api.schemas_admin import ApkBuildPage, ApkDownloadOut, ApkDownloadPage

Cursor = Annotated[str | None, Parameter(description="`next_cursor` of the previous page", pattern=r"^[0-9]{1,18}$")]


@get(
    "/v1/apk/builds",
    tags=["admin", "apk"],
    summary="List builds, newest version first",
    description="Every build on one page (`next_cursor` is always null).",
    sync_to_thread=True,
    **admin_route("viewer", readonly=True),
    responses=problems(400, 401, 403, 422, 429),
)
def list_builds(request: Request[Any, Any, Any], db: DB) -> ApkBuildPage:
    base = str(request.base_url).rstrip("/")
    items = [
        convert(build | {"download_url": f"{base}/v1/apk/download/{build['id']}"}, ApkBuildOut)
        for build in apk.list_builds(db)
    ]
    return ApkBuildPage(items=items, next_cursor=None)


@get(
    "/v1/apk/downloads",
    tags=["admin", "apk"],
    summary="APK download events, newest first",
    sync_to_thread=True,
    **admin_route("viewer", readonly=True),
    responses=problems(400, 401, 403, 422, 429),
)
def list_downloads(db: DB, limit: Limit = 100, cursor: Cursor = None) -> ApkDownloadPage:
    before_id = int(cursor) if cursor else None
    rows, next_cursor = keyset_page(lambda n: apk.list_downloads(db, limit=n, before_id=before_id), limit, "id")
    return ApkDownloadPage(items=[convert(r, ApkDownloadOut) for r in rows], next_cursor=next_cursor)
