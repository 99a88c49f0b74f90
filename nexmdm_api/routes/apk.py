"""APK builds: metadata of the newest, resumable downloads with an audit trail, and CI uploads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from litestar import Controller, Request
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Stream
from sqlalchemy.orm import Session

from core.apk import builds as apk
from core.apk import storage as apk_storage
from core.base.errors import NotFound
from core.models import ApkBuild
from nexmdm_api.auth import (
    ANY_SECURITY,
    Principal,
    client_ip,
    require_apk_reader,
)
from nexmdm_api.db import DB
from nexmdm_api.errors import ApiError, problems
from nexmdm_api.routes.base import get
from nexmdm_api.schemas import MAX_PATH_INT, ApkBuildOut

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
        package=build.package,
    )


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


def _download_route(path: str, summary: str) -> HTTPRouteHandler:
    """A download: its path and summary, the rest alike."""
    return get(
        path,
        summary=summary,
        description=_DOWNLOAD_DOC,
        opt={"auth": "any"},
        security=ANY_SECURITY,
        media_type=APK_MEDIA_TYPE,
        responses=problems(400, 401, 404, 416, 422, 429),
    )


#: a build id in a path: bounded like every path integer (an unbounded one overflowed SQLite: a 500)
BuildId = Annotated[int, Parameter(ge=1, le=MAX_PATH_INT, description="a build id")]


class ApkController(Controller):
    """The newest build and downloads, for an enrollment token, a device or an admin key."""

    path = "/v1/apk"
    tags = ["apk"]

    @get(
        "/latest",
        summary="Metadata of the newest build",
        security=ANY_SECURITY,
        opt={"auth": "any", "readonly": True},
        responses=problems(400, 401, 404, 429),
    )
    def latest_build(self, request: Request[Any, Any, Any], db: DB) -> ApkBuildOut:
        require_apk_reader(request, db)
        return build_out(request, apk.get_build(db, None))

    @_download_route("/download/latest", "Download the newest build")
    def download_latest(self, request: Request[Any, Any, Any], db: DB, source: AdminSource = "manual") -> Stream:
        return _download(request, db, None, source)

    @_download_route("/download/{build_id:int}", "Download one build")
    def download_build(
        self, request: Request[Any, Any, Any], db: DB, build_id: BuildId, source: AdminSource = "manual"
    ) -> Stream:
        return _download(request, db, build_id, source)
