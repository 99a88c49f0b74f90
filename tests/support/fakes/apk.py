"""A file that passes for an APK: a ZIP archive holding ``AndroidManifest.xml``."""

from __future__ import annotations

import io
import zipfile


def apk_bytes(content: bytes = b"\0" * 1024, *, manifest: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        if manifest:
            archive.writestr("AndroidManifest.xml", "<manifest/>")
        archive.writestr("classes.dex", content)
    return buffer.getvalue()
