"""What an APK's manifest says it is: its package and version code, read from the compiled
``AndroidManifest.xml`` (Android's binary XML) with ``pyaxmlparser`` at upload.

A manifest that cannot be read (not binary XML, truncated, too big, or naming no valid package) yields
nothing: the build is recorded without a package, as every build was before the server read manifests
(``profiles apply`` then trusts the profile's author to pair the build with its package)."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pyaxmlparser.axmlprinter import AXMLPrinter

from core.base.validation import PACKAGE_RE

MANIFEST = "AndroidManifest.xml"
#: a compiled manifest is tens of KiB; a bigger one (a ZIP bomb's) is not inflated
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_PACKAGE = 255
_ANDROID = "{http://schemas.android.com/apk/res/android}"
#: pyaxmlparser logs every malformed manifest at ERROR; a text stand-in is no operator's error
logging.getLogger("pyaxmlparser").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class ManifestInfo:
    package: str
    version_code: int | None


def read_manifest(path: Path) -> ManifestInfo | None:
    """The package and version code the APK at ``path`` declares, or None when its manifest is unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(MANIFEST)
            if info.file_size > MAX_MANIFEST_BYTES:
                return None
            with archive.open(info) as member:
                raw = member.read(MAX_MANIFEST_BYTES + 1)
    except (KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None
    return parse_manifest(raw)


def parse_manifest(raw: bytes) -> ManifestInfo | None:
    """The package and version code of a compiled manifest's ``<manifest>`` element."""
    if len(raw) > MAX_MANIFEST_BYTES:
        return None
    try:
        printer = AXMLPrinter(raw)
        root = printer.get_xml_obj() if printer.is_valid() else None
    except Exception:  # noqa: BLE001 - a malformed manifest may fail anywhere in the parser: it is only unreadable
        return None
    if root is None or root.tag != "manifest":
        return None
    package = root.get("package")
    if not isinstance(package, str) or len(package) > MAX_PACKAGE or not PACKAGE_RE.fullmatch(package):
        return None
    code = root.get(f"{_ANDROID}versionCode")
    version_code = (
        int(code) if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) <= 10 else None
    )
    return ManifestInfo(package, version_code)
