"""APK builds: metadata of the newest, resumable downloads with an audit trail, and CI uploads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, KwargDefinition, Parameter
from litestar.response import Stream
from sqlalchemy.orm import Session

from core import apk, db_utils
from core.errors import NotFound
from core.models import ApkBuild
from nexmdm_api.auth import (
    ANY_SECURITY,
    Principal,
    admin_actor,
    admin_route,
    client_ip,
    require_admin,
    require_apk_reader,
)
from nexmdm_api.db import DB
from nexmdm_api.errors import ApiError, problems
from nexmdm_api.schemas import TEXT_PATTERN, ApkBuildOut

APK_MEDIA_TYPE = "application/vnd.android.package-archive"
CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MAX_DIGITS = 18  # 1 EB: past any APK
_SOURCES = {"enrollment": "enrollment", "device": "update"}


def build_out(request: Request[Any, Any, Any], build: ApkBuild) -> ApkBuildOut:
    base = str(request.base_url).rstrip("/")
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
    path = apk.build_path(request.app.state.settings, build)
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed by the stream
    except OSError:
        raise NotFound(f"the file of APK build {build.id} is missing from the APK folder") from None

    first, last = byte_range if byte_range is not None else (0, size - 1)
    if first == 0:  # a new download; a resumed one (a range past byte 0) is not another event
        db_utils.record_apk_download(
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
    "with `If-Range` resumes. Records one audit event per download: requests for a range that starts past byte 0 "
    "are resumptions and are not recorded again. Takes no enrollment use."
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


@get("/v1/apk/download/{build_id:int}", summary="Download one build", **_DOWNLOAD)
def download_build(
    request: Request[Any, Any, Any], db: DB, build_id: FromPath[int], source: AdminSource = "manual"
) -> Stream:
    return _download(request, db, build_id, source)


@dataclass
class ApkUpload:
    file: UploadFile
    # documented here, checked by ``core.apk.add_build`` (Litestar does not apply these to a multipart form)
    version_code: Annotated[int, KwargDefinition(ge=1, le=apk.MAX_VERSION_CODE)]
    version_name: Annotated[str, KwargDefinition(min_length=1, max_length=64, pattern=TEXT_PATTERN)]


@post(
    "/v1/apk/builds",
    tags=["admin", "apk"],
    summary="Upload a build (CI)",
    description="`multipart/form-data` with `file`, `version_code` and `version_name`. Its own body limit "
    "(`NEXMDM_APK_UPLOAD_MAX_MB`).",
    status_code=201,
    sync_to_thread=True,
    **admin_route("operator", body="multipart", action="apk.upload"),
    responses=problems(400, 401, 403, 409, 413, 415, 422, 429),
)
def upload_build(
    request: Request[Any, Any, Any],
    db: DB,
    data: Annotated[ApkUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
) -> ApkBuildOut:
    require_admin(request, db)
    try:
        result = apk.add_build(
            db,
            request.app.state.settings,
            source=data.file.file,  # type: ignore[arg-type]
            version_code=data.version_code,
            version_name=data.version_name,
            actor=admin_actor(request),
        )
    finally:
        data.file.file.close()
    return build_out(request, apk.get_build(db, result["id"]))
