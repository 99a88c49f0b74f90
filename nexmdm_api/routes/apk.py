"""APK builds: metadata of the newest, resumable downloads with an audit trail, and CI uploads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import anyio.to_thread
from litestar import Request, delete, get, post
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import Parameter
from litestar.response import Stream
from sqlalchemy.orm import Session

from core.apk import builds as apk
from core.apk import storage as apk_storage
from core.base.errors import InvalidArgument, NotFound
from core.models import ApkBuild
from nexmdm_api.auth import (
    ANY_SECURITY,
    Principal,
    admin_actor,
    admin_route,
    client_ip,
    confirm_admin,
    require_apk_reader,
)
from nexmdm_api.db import DB
from nexmdm_api.errors import ApiError, problems
from nexmdm_api.schemas import MAX_PATH_INT, TEXT_PATTERN, ApkBuildOut, ApkBuildRemoved
from nexmdm_api.upload import read_apk_form

APK_MEDIA_TYPE = "application/vnd.android.package-archive"
CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MAX_DIGITS = 18  # 1 EB: past any APK
_SOURCES = {"enrollment": "enrollment", "device": "update"}


def build_out(request: Request[Any, Any, Any], build: ApkBuild) -> ApkBuildOut:
    # from the configured public URL, never from the Host header (a client chooses it: a poisoned link)
    base = request.app.state.settings.public_url
    return ApkBuildOut(
        id=build.id,
        version_code=build.version_code,
        version_name=build.version_name,
        size_bytes=build.size_bytes,
        sha256=build.sha256,
        created_at=build.created_at,
        download_url=f"{base}/v1/apk/download/{build.id}",
    )


@get(
    "/v1/apk/latest",
    tags=["apk"],
    summary="Metadata of the newest build",
    security=ANY_SECURITY,
    sync_to_thread=True,
    opt={"auth": "any", "readonly": True},
    responses=problems(400, 401, 404, 429),
)
def latest_build(request: Request[Any, Any, Any], db: DB) -> ApkBuildOut:
    require_apk_reader(request, db)
    return build_out(request, apk.get_build(db, None))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range asked for, as ``(first, last)``; ``None`` means "send everything".

    Malformed or multi-range headers are ignored (RFC 9110 allows it); a range that starts past the
    end is 416.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header.strip().replace(" ", ""))
    if not match or match.groups() == ("", ""):
        return None
    first_text, last_text = match.groups()
    if first_text == "":  # the last N bytes
        suffix = _position(last_text)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = _position(first_text)
    if first >= size:
        raise _unsatisfiable(size)
    last = _position(last_text) if last_text else size - 1
    if last < first:
        return None
    return first, min(last, size - 1)


def _position(digits: str) -> int:
    """A byte position; one too long to be real counts as 10**18, past the end of any file (``int()`` of
    more than 4300 digits raises, which was a 500)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416, "the requested range is beyond the end of the file", headers={"Content-Range": f"bytes */{size}"}
    )


def _chunks(handle: BinaryIO, remaining: int) -> Iterator[bytes]:
    try:
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


def _download(request: Request[Any, Any, Any], db: Session, build_id: int | None, source: str) -> Stream:
    principal: Principal = require_apk_reader(request, db)
    build = apk.get_build(db, build_id)
    etag = f'"{build.sha256}"'
    size = build.size_bytes
    byte_range = parse_range(request.headers.get("range"), size)
    if_range = request.headers.get("if-range")
    if byte_range is not None and if_range is not None and if_range.strip() != etag:
        byte_range = None  # the file changed (or a date was sent): start over with the whole file
    path = apk_storage.local_file(db, request.app.state.settings, build)  # the database's copy, cached here
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed by the stream
    except OSError:
        raise NotFound(f"the file of APK build {build.id} is missing on this node") from None

    first, last = byte_range if byte_range is not None else (0, size - 1)
    # one event per credential and build per download session, whatever the range (a download may well
    # start at byte 1: every APK starts with "P")
    apk.record_download(
        db,
        build_id=build.id,
        source=_SOURCES.get(principal.kind, source),
        token_id=principal.token_id,
        ip=_ip_or_none(client_ip(request)),
    )
    handle.seek(first)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Length": str(last - first + 1),
        "Content-Disposition": f'attachment; filename="nexmdm-agent-{build.version_code}.apk"',
        "Cache-Control": "private, no-cache",
    }
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return Stream(
        _chunks(handle, last - first + 1),
        status_code=206 if byte_range is not None else 200,
        media_type=APK_MEDIA_TYPE,
        headers=headers,
    )


def _ip_or_none(value: str) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


AdminSource = Annotated[
    Literal["manual", "ci"],
    Parameter(description="audit source of an admin download (ignored for enrollment and device tokens)"),
]
_DOWNLOAD_DOC = (
    "Streams the build with `Content-Length`, `ETag` (the sha256), `Accept-Ranges: bytes`; `Range` (one range) "
    "with `If-Range` resumes. Records one audit event per credential and build per download session (an hour), "
    "whatever the range asked for. Takes no enrollment use."
)
_DOWNLOAD = {
    "tags": ["apk"],
    "opt": {"auth": "any"},
    "security": ANY_SECURITY,
    "sync_to_thread": True,
    "media_type": APK_MEDIA_TYPE,
    "description": _DOWNLOAD_DOC,
    "responses": problems(400, 401, 404, 416, 422, 429),
}


@get("/v1/apk/download/latest", summary="Download the newest build", **_DOWNLOAD)
def download_latest(request: Request[Any, Any, Any], db: DB, source: AdminSource = "manual") -> Stream:
    return _download(request, db, None, source)


#: a build id in a path: bounded like every path integer (an unbounded one overflowed SQLite: a 500)
BuildId = Annotated[int, Parameter(ge=1, le=MAX_PATH_INT, description="a build id")]


@get("/v1/apk/download/{build_id:int}", summary="Download one build", **_DOWNLOAD)
def download_build(
    request: Request[Any, Any, Any], db: DB, build_id: BuildId, source: AdminSource = "manual"
) -> Stream:
    return _download(request, db, build_id, source)


def _upload_operation_body() -> RequestBody:
    """The upload's body for the OpenAPI document (the handler reads the stream itself, after the key check)."""
    schema = Schema(
        type=OpenAPIType.OBJECT,
        required=["file", "version_code", "version_name"],
        properties={
            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description="the APK"),
            "version_code": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=apk.MAX_VERSION_CODE),
            "version_name": Schema(type=OpenAPIType.STRING, min_length=1, max_length=64, pattern=TEXT_PATTERN),
        },
    )
    return RequestBody(content={"multipart/form-data": OpenAPIMediaType(schema=schema)}, required=True)


@dataclass
class UploadOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _upload_operation_body()


def _version_code(raw: str | None) -> int:
    text = (raw or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise InvalidArgument(f"version_code must be between 1 and {apk.MAX_VERSION_CODE}", field="version_code")
    return int(text)


@post(
    "/v1/apk/builds",
    tags=["admin", "apk"],
    summary="Upload a build (CI)",
    description="`multipart/form-data` with `file` (an APK: a ZIP archive with `AndroidManifest.xml`), "
    "`version_code` and `version_name` (each at most 4096 bytes). The admin key is checked before the body is "
    "read. Its own body limit (`NEXMDM_APK_UPLOAD_MAX_MB`).",
    status_code=201,
    **admin_route("operator", body="multipart", action="apk.upload"),
    operation_class=UploadOperation,
    responses=problems(400, 401, 403, 409, 413, 415, 422, 429),
)
async def upload_build(request: Request[Any, Any, Any]) -> ApkBuildOut:
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


@delete(
    "/v1/apk/builds/{build_id:int}",
    tags=["admin", "apk"],
    summary="Remove a build",
    description='Withdraws a build (a bad "latest"): it is no longer the newest nor downloadable (404). Its row '
    "and download audit stay. Removing a removed build again is 200. CLI: `nexmdm apk remove ID`.",
    status_code=200,
    sync_to_thread=True,
    **admin_route("operator", action="apk.remove"),
    responses=problems(400, 401, 403, 404, 422, 429),
)
def remove_build(request: Request[Any, Any, Any], db: DB, build_id: BuildId) -> ApkBuildRemoved:
    removed = apk.remove_build(db, build_id, actor=admin_actor(request))
    return ApkBuildRemoved(id=removed["id"], version_code=removed["version_code"], removed_at=removed["removed_at"])
