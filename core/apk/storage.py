"""Where APK builds' bytes live: behind one interface, in the database or in a folder.

* ``database`` (the default on PostgreSQL): the bytes go into ``apk_blobs``/``apk_chunks`` in the same
  transaction as the build's row, so a build is complete on every node the moment it is visible, and a
  failed upload leaves nothing. Each node serves from a cache on its own disk, one file per SHA-256
  (``NEXMDM_DATA_DIR/apk-cache``), filled from the database on the first download and checked against
  the build's SHA-256 before it is used; Range requests then read a local file as before.
* ``folder`` (the default on SQLite, one node): files in ``NEXMDM_APK_DIR`` as before.

Builds added before the database storage existed have a file in the APK folder and no blob: every server
process imports the files its node holds at start (``import_files``), and a download of such a build
imports it first, so they migrate without a step of their own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.base.errors import NotFound
from core.base.settings import Settings
from core.models import ApkBlob, ApkBuild
from core.storage.dialect import is_postgresql
from core.storage.types import utcnow

ZIP_MAGIC = b"PK\x03\x04"
#: cache files this process has checked against their SHA-256: path -> (inode, size, mtime, ctime) then. A
#: file changed since (even to the same size: issue #21) no longer matches and is hashed again; ctime
#: cannot be set back by a writer, so the mark holds without hashing every download
_VERIFIED: dict[Path, tuple[int, int, int, int]] = {}
#: bytes per ``apk_chunks`` row: big enough for few rows, small enough that one never strains memory
CHUNK_BYTES = 1024 * 1024


@dataclass
class Upload:
    """An upload received into a temporary file, fingerprinted, not yet stored."""

    path: Path
    size: int
    sha256: str


def _apk_dir(settings: Settings) -> Path:
    return Path(cast(Path, settings.apk_dir))  # set by Settings.__post_init__


def cache_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "apk-cache"


def spool_dir(settings: Settings) -> Path:
    """Where uploads are received: beside their destination, so that storing one is a rename."""
    return _apk_dir(settings) if settings.apk_storage == "folder" else cache_dir(settings)


def store(db: Session, settings: Settings, upload: Upload, filename: str) -> None:
    """Put a received upload where builds are served from. In the caller's transaction: with the
    database storage the bytes commit (or roll back) with the build's row."""
    if settings.apk_storage == "folder":
        os.replace(upload.path, _apk_dir(settings) / filename)
        return
    with upload.path.open("rb") as handle:
        _insert_blob(db, upload.sha256, upload.size, handle)
    os.replace(upload.path, cache_dir(settings) / f"{upload.sha256}.apk")


def _insert_blob(db: Session, sha256: str, size: int, handle: BinaryIO) -> None:
    """The blob and its chunks; nothing when the same bytes are stored already (another build, or a
    concurrent upload of the same file: its row is waited for, then this insert does nothing)."""
    # the named constraint on PostgreSQL; SQLite names only the columns of a conflict target
    target = "ON CONSTRAINT pk_apk_blobs" if is_postgresql(db) else "(sha256)"
    inserted = db.execute(
        text(
            "INSERT INTO apk_blobs (sha256, size_bytes, chunk_size, created_at) "
            f"VALUES (:sha256, :size, :chunk, :now) ON CONFLICT {target} DO NOTHING RETURNING sha256"
        ),
        {"sha256": sha256, "size": size, "chunk": CHUNK_BYTES, "now": _now(db)},
    ).first()
    if inserted is None:
        return
    seq = 0
    while chunk := handle.read(CHUNK_BYTES):
        db.execute(
            text("INSERT INTO apk_chunks (sha256, seq, data) VALUES (:sha256, :seq, :data)"),
            {"sha256": sha256, "seq": seq, "data": chunk},
        )
        seq += 1


def _now(db: Session) -> Any:
    now = utcnow()
    if not is_postgresql(db):
        return now.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return now


def local_file(db: Session, settings: Settings, build: ApkBuild) -> Path:
    """A file on this node holding ``build``'s bytes, to stream from (filled from the database once)."""
    legacy = _apk_dir(settings) / build.filename
    if settings.apk_storage == "folder":
        if not legacy.is_file():
            raise NotFound(f"the file of APK build {build.id} is missing from the APK folder")
        return legacy
    cached = cache_dir(settings) / f"{build.sha256}.apk"
    if _verified(cached, build):
        return cached
    blob = db.get(ApkBlob, build.sha256)
    if blob is None:
        if not legacy.is_file():
            raise NotFound(f"APK build {build.id} has no contents in the database and no file on this node")
        _import(db, settings, build, legacy)
        return legacy
    return _fill_cache(db, settings, build, cached)


def _mark(path: Path) -> tuple[int, int, int, int]:
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(cached: Path, build: ApkBuild) -> bool:
    """Whether the cache file holds the build's bytes: unchanged since this process hashed it, or hashed now."""
    try:
        mark = _mark(cached)
    except FileNotFoundError:
        return False
    if mark[1] != build.size_bytes:
        return False
    if _VERIFIED.get(cached) != mark:
        if _sha256(cached) != build.sha256:
            return False  # changed on disk: filled again from the database
        _VERIFIED[cached] = mark
    return True


def _fill_cache(db: Session, settings: Settings, build: ApkBuild, cached: Path) -> Path:
    """Copy the chunks to a temporary file, check size and SHA-256, then rename it into the cache."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=cached.parent, prefix=".fill-", suffix=".apk")
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            seq = 0
            while True:  # one chunk per round trip: memory stays at one chunk whatever the build's size
                row = db.execute(
                    text("SELECT data FROM apk_chunks WHERE sha256 = :sha256 AND seq = :seq"),
                    {"sha256": build.sha256, "seq": seq},
                ).first()
                if row is None:
                    break
                data = bytes(row[0])
                digest.update(data)
                out.write(data)
                size += len(data)
                seq += 1
        if size != build.size_bytes or digest.hexdigest() != build.sha256:
            raise NotFound(f"the stored contents of APK build {build.id} do not match its SHA-256")
        os.chmod(name, 0o400)  # read-only: served as it was checked
        os.replace(name, cached)
        _VERIFIED[cached] = _mark(cached)
    finally:
        Path(name).unlink(missing_ok=True)
    return cached


def _import(db: Session, settings: Settings, build: ApkBuild, path: Path) -> None:
    """Store a folder build's file in the database (checked against its SHA-256 first)."""
    if _sha256(path) != build.sha256:
        raise NotFound(f"the file of APK build {build.id} does not match its SHA-256")
    with path.open("rb") as handle:
        _insert_blob(db, build.sha256, build.size_bytes, handle)


def import_files(db: Session, settings: Settings) -> list[int]:
    """Import every build that has a file in the APK folder and no contents in the database; the ids."""
    if settings.apk_storage != "database":
        return []
    missing = db.execute(
        select(ApkBuild).where(~select(ApkBlob.sha256).where(ApkBlob.sha256 == ApkBuild.sha256).exists())
    ).scalars()
    done = []
    for build in missing:
        path = _apk_dir(settings) / build.filename
        if path.is_file():
            _import(db, settings, build, path)
            done.append(build.id)
    return done


def forget(db: Session, settings: Settings, build: ApkBuild) -> None:
    """Remove a build's contents once no other build has the same bytes (for a build being deleted)."""
    others = db.execute(
        select(ApkBuild.id).where(ApkBuild.sha256 == build.sha256, ApkBuild.id != build.id).limit(1)
    ).first()
    if others is None:
        db.execute(text("DELETE FROM apk_blobs WHERE sha256 = :sha256"), {"sha256": build.sha256})
        (cache_dir(settings) / f"{build.sha256}.apk").unlink(missing_ok=True)
