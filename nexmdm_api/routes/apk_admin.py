"""APK builds for admins: upload (CI), list and remove them; the download audit (``nexmdm apk ...``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
import litestar
from litestar import Controller, Request
from litestar.openapi.spec import Encoding, OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import Parameter

from core.apk import builds as apk
from core.base.errors import InvalidArgument
from core.base.settings import Settings
from nexmdm_api.auth import admin_actor, admin_route, confirm_admin
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import allow
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.apk import APK_MEDIA_TYPE, BuildId, build_out
from nexmdm_api.routes.base import delete, get
from nexmdm_api.schemas import TEXT_PATTERN, ApkBuildOut, ApkBuildRemoved, convert
from nexmdm_api.schemas_admin import ApkBuildPage, ApkDownloadOut, ApkDownloadPage
from nexmdm_api.upload import read_apk_form

Cursor = Annotated[str | None, Parameter(description="`next_cursor` of the previous page", pattern=r"^[0-9]{1,18}$")]


def _upload_operation_body() -> RequestBody:
    """The upload's body for the OpenAPI document (the handler reads the stream itself, after the key check)."""
    schema = Schema(
        type=OpenAPIType.OBJECT,
        required=["file", "version_code", "version_name"],
        properties={
            "file": Schema(
                type=OpenAPIType.STRING,
                format=OpenAPIFormat.BINARY,
                content_media_type=APK_MEDIA_TYPE,
                description=f"the APK (a ZIP archive with `{apk.MANIFEST}`), at most `NEXMDM_APK_UPLOAD_MAX_MB` MiB "
                f"({Settings.apk_upload_max_mb} by default): a larger body is 413",
            ),
            "version_code": Schema(
                type=OpenAPIType.INTEGER,
                minimum=1,
                maximum=apk.MAX_VERSION_CODE,
                description="unique: a version code already uploaded is 409",
            ),
            "version_name": Schema(type=OpenAPIType.STRING, min_length=1, max_length=64, pattern=TEXT_PATTERN),
        },
        # the form has these three parts and no other (``nexmdm_api.upload``: another part is 422)
        additional_properties=False,
    )
    media = OpenAPIMediaType(schema=schema, encoding={"file": Encoding(content_type=APK_MEDIA_TYPE)})
    return RequestBody(content={"multipart/form-data": media}, required=True)


@dataclass
class UploadOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _upload_operation_body()


def _version_code(raw: str | None) -> int:
    text = (raw or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise InvalidArgument(f"version_code must be between 1 and {apk.MAX_VERSION_CODE}", field="version_code")
    return int(text)


def _record(
    request: Request[Any, Any, Any], staged: apk.StagedApk, version_code: int, version_name: str
) -> ApkBuildOut:
    with request.app.state.db.sessions.begin() as db:
        confirm_admin(request, db)  # the upload took a while: is the key still valid (first, under the lock)?
        result = apk.record_build(
            db,
            request.app.state.settings,
            staged,
            version_code=version_code,
            version_name=version_name,
            actor=admin_actor(request),
        )
        return build_out(request, apk.get_build(db, result["id"]))


class ApkBuildController(Controller):
    """The builds: list, upload, remove. ``create_app`` mounts it under a router with the upload's body limit."""

    path = "/v1/apk/builds"
    tags = ["admin", "apk"]
    allowed = allow(path)  # GET and POST share the path

    @get(
        "/",
        summary="List builds, newest version first",
        description="Every build on one page (`next_cursor` is always null).",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_builds(self, request: Request[Any, Any, Any], db: DB) -> ApkBuildPage:
        base = str(request.base_url).rstrip("/")
        items = [
            convert(build | {"download_url": f"{base}/v1/apk/download/{build['id']}"}, ApkBuildOut)
            for build in apk.list_builds(db)
        ]
        return ApkBuildPage(items=items, next_cursor=None)

    @litestar.post(
        "/",
        summary="Upload a build (CI)",
        description="`multipart/form-data` with `file` (an APK: a ZIP archive with `AndroidManifest.xml`), "
        "`version_code` and `version_name` (each at most 4096 bytes). The admin key is checked before the body is "
        "read. Its own body limit (`NEXMDM_APK_UPLOAD_MAX_MB`).",
        status_code=201,
        **admin_route("operator", body="multipart", action="apk.upload"),
        operation_class=UploadOperation,
        responses=problems(400, 401, 403, 409, 413, 415, 422, 429),
    )
    async def upload_build(self, request: Request[Any, Any, Any]) -> ApkBuildOut:
        settings = request.app.state.settings
        form = await read_apk_form(request, settings)
        staged = form.staged
        try:
            if staged is None:
                raise InvalidArgument("the form has no file: send the APK as the `file` part", field="file")
            missing = [name for name in ("version_code", "version_name") if name not in form.fields]
            if missing:
                raise InvalidArgument(f"the form has no {missing[0]}", field=missing[0])
            version_code = _version_code(form.fields["version_code"])
            version_name = form.fields["version_name"]
            apk.check_build_fields(version_code, version_name)
            # the file is in place and hashed: now one short transaction records it
            return await anyio.to_thread.run_sync(_record, request, staged, version_code, version_name)
        finally:
            if staged is not None:
                staged.discard()  # a no-op once the file was renamed into place

    @delete(
        "/{build_id:int}",
        summary="Remove a build",
        description='Withdraws a build (a bad "latest"): it is no longer the newest nor downloadable (404). Its row '
        "and download audit stay. Removing a removed build again is 200. CLI: `nexmdm apk remove ID`.",
        status_code=200,
        **admin_route("operator", action="apk.remove"),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def remove_build(self, request: Request[Any, Any, Any], db: DB, build_id: BuildId) -> ApkBuildRemoved:
        removed = apk.remove_build(db, build_id, actor=admin_actor(request))
        return ApkBuildRemoved(id=removed["id"], version_code=removed["version_code"], removed_at=removed["removed_at"])


class ApkDownloadController(Controller):
    """The download audit."""

    path = "/v1/apk/downloads"
    tags = ["admin", "apk"]

    @get(
        "/",
        summary="APK download events, newest first",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_downloads(self, db: DB, limit: Limit = 100, cursor: Cursor = None) -> ApkDownloadPage:
        before_id = int(cursor) if cursor else None
        rows, next_cursor = keyset_page(lambda n: apk.list_downloads(db, limit=n, before_id=before_id), limit, "id")
        return ApkDownloadPage(items=[convert(r, ApkDownloadOut) for r in rows], next_cursor=next_cursor)
