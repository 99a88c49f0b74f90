"""The APK upload's body: ``multipart/form-data`` read as a stream, after the admin key was checked.

Litestar's own form parsing keeps every non-file field in memory whatever its size and runs before the
handler (and so before any credential check in it). Here the credential is checked first (``check_request``
in ``nexmdm_api.app``), then the body is parsed chunk by chunk: the file goes straight into the APK folder
through ``core.apk.builds.ApkStager`` (hashed on the way), the two text fields may hold at most
:data:`MAX_FIELD_BYTES`, and anything else is refused as soon as it appears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from litestar import Request
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from core.apk import builds as apk
from core.base.settings import Settings
from nexmdm_api.errors import ApiError

#: the longest ``version_code`` / ``version_name`` value accepted (both are far shorter)
MAX_FIELD_BYTES = 4096
FIELDS = ("version_code", "version_name")


@dataclass
class ApkForm:
    fields: dict[str, str] = field(default_factory=dict)
    staged: apk.StagedApk | None = None


def _invalid(detail: str) -> ApiError:
    return ApiError(400, detail, code="bad_request")


class _FormReader:
    """The parser's events, one method each: a part starts, a piece of its data, the part ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.form = ApkForm()
        self.stager: apk.ApkStager | None = None
        self.segment: MultipartSegment | None = None
        self.value = bytearray()

    def start(self, part: MultipartSegment) -> None:
        self.segment, self.value = part, bytearray()
        if part.name == "file" and part.filename is not None:
            if self.stager is not None:
                raise ApiError(422, "send one file", code="invalid_argument")
            self.stager = apk.ApkStager(self.settings)
        elif part.name not in FIELDS or part.filename is not None or part.name in self.form.fields:
            raise ApiError(422, f"unexpected form field {part.name[:64]!r}", code="invalid_argument")

    def file_stager(self) -> apk.ApkStager | None:
        """The stager while the file's part is being read, else None (a text field's part)."""
        in_file = self.segment is not None and self.segment.name == "file"
        return self.stager if in_file else None

    def text(self, data: bytes) -> None:
        self.value += data
        if len(self.value) > MAX_FIELD_BYTES:
            raise ApiError(413, f"a form field may hold at most {MAX_FIELD_BYTES} bytes")

    def end(self) -> None:
        if self.segment is not None and self.file_stager() is None:
            try:
                self.form.fields[self.segment.name] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "the form field is not valid UTF-8", code="invalid_utf8") from None
        self.segment = None

    def discard(self) -> None:
        if self.stager is not None:
            self.stager.discard()


async def read_apk_form(request: Request[Any, Any, Any], settings: Settings) -> ApkForm:
    """Parse the upload; the staged file (if any) belongs to the caller once this returns."""
    boundary = request.content_type[1].get("boundary")
    if not boundary:
        raise _invalid("multipart boundary missing in Content-Type")
    reader = _FormReader(settings)
    try:
        with PushMultipartParser(boundary.encode("latin-1"), max_segment_count=len(FIELDS) + 2) as parser:
            async for chunk in _chunks(request):
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        reader.start(part)
                    elif part and (stager := reader.file_stager()) is not None:
                        await anyio.to_thread.run_sync(stager.write, bytes(part))
                    elif part:
                        reader.text(part)
                    else:
                        reader.end()
            if not parser.closed:
                raise _invalid("the multipart/form-data body is truncated")
    except ParserLimitReached:
        reader.discard()
        raise ApiError(413, "too many parts or headers in the form") from None
    except ParserError:
        reader.discard()
        raise _invalid("the body is not valid multipart/form-data") from None
    except BaseException:
        reader.discard()
        raise
    if reader.stager is not None:
        reader.form.staged = await anyio.to_thread.run_sync(reader.stager.finish)
    return reader.form


async def _chunks(request: Request[Any, Any, Any]) -> Any:
    """The body's chunks (Litestar enforces the route's body limit), then ``b""`` to end the parser."""
    async for chunk in request.stream():
        if chunk:
            yield chunk
    yield b""
