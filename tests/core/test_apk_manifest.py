"""An APK's manifest read at upload: its package and version code, or nothing when it cannot be read."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from core.apk.manifest import MAX_MANIFEST_BYTES, ManifestInfo, parse_manifest, read_manifest
from tests.support.fakes.apk import apk_bytes, binary_manifest


def test_a_compiled_manifest_names_its_package_and_version_code(tmp_path: Path) -> None:
    assert parse_manifest(binary_manifest("com.acme.pos", 4200)) == ManifestInfo("com.acme.pos", 4200)
    path = tmp_path / "pos.apk"
    path.write_bytes(apk_bytes(package="com.acme.pos", version_code=7))
    assert read_manifest(path) == ManifestInfo("com.acme.pos", 7)


@pytest.mark.parametrize(
    "raw",
    [
        b"<manifest/>",  # text, not compiled
        b"",
        binary_manifest("com.acme.pos", 4200)[:-30],  # truncated
        binary_manifest("nodots", 1),  # not a package name
        b"\x03\x00\x08\x00" + b"\xff" * 4,
        b"\0" * 64,
    ],
)
def test_an_unreadable_manifest_yields_nothing(raw: bytes) -> None:
    assert parse_manifest(raw) is None


def test_a_zip_without_a_manifest_or_a_huge_one_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.apk"
    path.write_bytes(apk_bytes(manifest=False))
    assert read_manifest(path) is None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # a bomb is not inflated
        archive.writestr("AndroidManifest.xml", b"\0" * (MAX_MANIFEST_BYTES + 1))
    path.write_bytes(buffer.getvalue())
    assert read_manifest(path) is None
