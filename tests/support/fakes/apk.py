"""A file that passes for an APK: a ZIP archive holding ``AndroidManifest.xml``, either a text stand-in
(whose package the server cannot read) or a real binary manifest (Android's compiled XML, AXML) naming a
package and a version code, as ``aapt2`` writes it."""

from __future__ import annotations

import io
import struct
import zipfile

ANDROID_NS = "http://schemas.android.com/apk/res/android"
#: the framework's resource ids of the attributes written (android.R.attr)
_VERSION_CODE_ID = 0x0101021B
_NULL = 0xFFFFFFFF


def _string_pool(strings: list[str]) -> bytes:
    """A UTF-16 string pool chunk (RES_STRING_POOL_TYPE)."""
    offsets, data = [], b""
    for text in strings:
        offsets.append(len(data))
        data += struct.pack("<H", len(text)) + text.encode("utf-16-le") + b"\0\0"
    data += b"\0" * (-len(data) % 4)
    header_size = 28
    strings_start = header_size + 4 * len(strings)
    size = strings_start + len(data)
    head = struct.pack("<HHIIIIII", 0x0001, header_size, size, len(strings), 0, 0, strings_start, 0)
    return head + b"".join(struct.pack("<I", o) for o in offsets) + data


def _node(kind: int, body: bytes) -> bytes:
    """An XML tree node chunk: its 16-byte header (line number 1, no comment) and its body."""
    return struct.pack("<HHIII", kind, 16, 16 + len(body), 1, _NULL) + body


def binary_manifest(package: str, version_code: int) -> bytes:
    """``<manifest xmlns:android=… android:versionCode=V package=P/>`` compiled to AXML."""
    # the attribute names with a resource id come first, in the resource map's order
    strings = ["versionCode", "package", "android", ANDROID_NS, "manifest", package]
    version_code_s, package_s, prefix_s, uri_s, manifest_s, value_s = range(len(strings))
    resource_map = struct.pack("<HHI", 0x0180, 8, 12) + struct.pack("<I", _VERSION_CODE_ID)
    attributes = [
        # namespace, name, raw value, typed value (size 8, res0, type, data): int (0x10), string (0x03)
        struct.pack("<IIIHBBI", uri_s, version_code_s, _NULL, 8, 0, 0x10, version_code),
        struct.pack("<IIIHBBI", _NULL, package_s, value_s, 8, 0, 0x03, value_s),
    ]
    start = struct.pack("<IIHHHHHH", _NULL, manifest_s, 20, 20, len(attributes), 0, 0, 0) + b"".join(attributes)
    body = (
        _string_pool(strings)
        + resource_map
        + _node(0x0100, struct.pack("<II", prefix_s, uri_s))
        + _node(0x0102, start)
        + _node(0x0103, struct.pack("<II", _NULL, manifest_s))
        + _node(0x0101, struct.pack("<II", prefix_s, uri_s))
    )
    return struct.pack("<HHI", 0x0003, 8, 8 + len(body)) + body


def apk_bytes(
    content: bytes = b"\0" * 1024, *, manifest: bool = True, package: str | None = None, version_code: int = 1
) -> bytes:
    """An APK stand-in; with ``package``, its manifest is a real binary one naming the package and
    ``version_code``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        if package is not None:
            archive.writestr("AndroidManifest.xml", binary_manifest(package, version_code))
        elif manifest:
            archive.writestr("AndroidManifest.xml", "<manifest/>")
        archive.writestr("classes.dex", content)
    return buffer.getvalue()
