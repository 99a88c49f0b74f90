"""APK builds: add (stage, check, fingerprint, store), list, find the latest, and the download audit trail.

Where the bytes live (the database or the APK folder) is :mod:`core.apk.storage`'s business."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.apk import storage as apk_storage
from core.apk.downloads import record_apk_download
from core.apk.manifest import ManifestInfo, read_manifest
from core.base import validation
from core.base.errors import Conflict, InvalidArgument, NotFound
from core.base.settings import Settings
from core.events.audit import Actor, record
from core.models import ApkBuild, ApkDownloadEvent
from core.storage.engine import private_dir
from core.storage.types import utcnow

MAX_VERSION_CODE = 2_100_000_000  # Android's limit for versionCode
ZIP_MAGIC = apk_storage.ZIP_MAGIC
MANIFEST = "AndroidManifest.xml"


def build_dict(build: ApkBuild) -> dict[str, Any]:
    return {
        "id": build.id,
        "version_code": build.version_code,
        "version_name": build.version_name,
        "package": build.package,
        "size_bytes": build.size_bytes,
        "sha256": build.sha256,
        "filename": build.filename,
        "created_at": build.created_at,
        "removed_at": build.removed_at,
    }


def build_path(settings: Settings, build: ApkBuild | dict[str, Any]) -> Path:
    filename = build["filename"] if isinstance(build, dict) else build.filename
    return Path(cast(Path, settings.apk_dir)) / filename  # set by Settings.__post_init__


def check_build_fields(version_code: object, version_name: object) -> None:
    if isinstance(version_code, bool) or not isinstance(version_code, int) or not 1 <= version_code <= MAX_VERSION_CODE:
        raise InvalidArgument(f"version_code must be between 1 and {MAX_VERSION_CODE}", field="version_code")
    validation.text(version_name, "version_name", max_length=64, required=True)


def check_apk(path: Path) -> None:
    """An APK is a ZIP archive with an ``AndroidManifest.xml``: reads the central directory only."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise InvalidArgument("the file is not an APK (APKs are ZIP archives)", field="file") from None
    if MANIFEST not in names:
        raise InvalidArgument(f"the file is not an APK: the archive has no {MANIFEST}", field="file")


@dataclass(frozen=True)
class StagedApk:
    """An upload copied beside its destination under a temporary name, fingerprinted and checked."""

    path: Path
    size: int
    sha256: str
    #: what its manifest declares (None: unreadable, see :mod:`core.apk.manifest`)
    manifest: ManifestInfo | None = None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class ApkStager:
    """Copies an upload beside where it will be stored, chunk by chunk while hashing it. No database: the
    transaction that records the build (:func:`record_build`) starts only afterwards, so SQLite's write
    lock is never held while a big file is hashed and copied."""

    def __init__(self, settings: Settings) -> None:
        spool = apk_storage.spool_dir(settings)
        private_dir(spool)  # 0700; the file is written 0600 (mkstemp)
        fd, name = tempfile.mkstemp(dir=spool, prefix=".upload-", suffix=".apk")
        self.path = Path(name)
        self._out = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self._head = b""
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if len(self._head) < len(ZIP_MAGIC):  # refuse a non-ZIP at its first bytes, not after 500 MB
            self._head = (self._head + chunk)[: len(ZIP_MAGIC)]
            if not ZIP_MAGIC.startswith(self._head):
                raise InvalidArgument("the file is not an APK (APKs are ZIP archives)", field="file")
        self._digest.update(chunk)
        self._out.write(chunk)
        self.size += len(chunk)

    def finish(self) -> StagedApk:
        """Close the file and check it: not empty, a ZIP archive, with an ``AndroidManifest.xml``."""
        self._out.close()
        try:
            if self.size == 0:
                raise InvalidArgument("the file is empty", field="file")
            check_apk(self.path)
        except BaseException:
            self.discard()
            raise
        return StagedApk(self.path, self.size, self._digest.hexdigest(), read_manifest(self.path))

    def discard(self) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)


def stage_build(settings: Settings, source: BinaryIO) -> StagedApk:
    stager = ApkStager(settings)
    try:
        while chunk := source.read(1024 * 1024):
            stager.write(chunk)
    except BaseException:
        stager.discard()
        raise
    return stager.finish()


def record_build(
    db: Session,
    settings: Settings,
    staged: StagedApk,
    *,
    version_code: int,
    version_name: str,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Record a staged build and store its bytes (``core.apk.storage``: a rename into the APK folder, or
    its chunks in the database in this transaction): no hashing or copying of the upload inside the
    transaction. The caller commits; on any error the staged file is removed."""
    try:
        check_build_fields(version_code, version_name)
        declared = staged.manifest
        if declared is not None and declared.version_code is not None and declared.version_code != version_code:
            raise InvalidArgument(
                f"version_code {version_code} differs from the APK's manifest ({declared.package} declares "
                f"versionCode {declared.version_code})",
                field="version_code",
            )
        if db.execute(select(ApkBuild.id).where(ApkBuild.version_code == version_code)).first() is not None:
            raise Conflict(f"a build with version code {version_code} already exists")
        filename = f"{version_code}-{staged.sha256[:16]}.apk"
        build = ApkBuild(
            version_code=version_code,
            version_name=version_name,
            package=declared.package if declared is not None else None,
            filename=filename,
            size_bytes=staged.size,
            sha256=staged.sha256,
            created_at=utcnow(),
        )
        db.add(build)
        try:
            db.flush()
        except IntegrityError:
            raise Conflict(f"a build with version code {version_code} already exists") from None
        record(
            db,
            actor,
            "apk.upload",
            str(build.id),
            version_code=version_code,
            package=build.package,
            sha256=staged.sha256,
        )
        # last: with the folder storage this renames the file into place (nothing after it can fail here)
        apk_storage.store(db, settings, apk_storage.Upload(staged.path, staged.size, staged.sha256), filename)
    except BaseException:
        staged.discard()
        raise
    return build_dict(build)


def add_build(
    db: Session,
    settings: Settings,
    *,
    source: BinaryIO,
    version_code: int,
    version_name: str,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Copy an APK into the APK folder, fingerprint it (size, sha256), check it and record it.

    The file is copied before the first statement (so no lock is held meanwhile), under a temporary name
    renamed into place, so a reader never sees half a file; on any error nothing is left behind.
    """
    check_build_fields(version_code, version_name)
    staged = stage_build(settings, source)
    return record_build(db, settings, staged, version_code=version_code, version_name=version_name, actor=actor)


def add_build_from_file(
    db: Session,
    settings: Settings,
    path: Path,
    *,
    version_code: int,
    version_name: str,
    actor: Actor | None = None,
) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidArgument(f"{path} is not a readable file", field="file")
    with path.open("rb") as source:
        return add_build(db, settings, source=source, version_code=version_code, version_name=version_name, actor=actor)


def remove_build(db: Session, build_id: int, *, actor: Actor | None = None) -> dict[str, Any]:
    """Withdraw a build: it is no longer the latest nor served (404); its row and download audit stay, and
    so does its file (delete it by hand if needed). Removing a removed build changes nothing."""
    build = db.get(ApkBuild, build_id)
    if build is None:
        raise NotFound(f"no APK build {build_id}")
    if build.removed_at is None:
        build.removed_at = utcnow()
        db.flush()
        record(db, actor, "apk.remove", str(build_id), version_code=build.version_code)
    return build_dict(build)


def list_builds(db: Session) -> list[dict[str, Any]]:
    return [build_dict(b) for b in db.execute(select(ApkBuild).order_by(ApkBuild.version_code.desc())).scalars()]


def get_build(db: Session, build_id: int | None = None) -> ApkBuild:
    """A build by id, or the newest (highest version code) when ``build_id`` is None; removed builds are
    neither."""
    if build_id is None:
        build = db.execute(
            select(ApkBuild).where(ApkBuild.removed_at.is_(None)).order_by(ApkBuild.version_code.desc()).limit(1)
        ).scalar_one_or_none()
        if build is None:
            raise NotFound("no APK build has been added yet (or every build was removed)")
        return build
    build = db.get(ApkBuild, build_id)
    if build is None:
        raise NotFound(f"no APK build {build_id}")
    if build.removed_at is not None:
        raise NotFound(f"APK build {build_id} was removed")
    return build


#: downloads by one credential of one build within this window are one download session: one audit event
DOWNLOAD_SESSION = timedelta(hours=1)


def record_download(
    db: Session, *, build_id: int, source: str, token_id: str, ip: str | None, now: datetime | None = None
) -> bool:
    """Audit a download once per credential and build per session (:data:`DOWNLOAD_SESSION`), whatever range
    it asks for: a download that starts past byte 0 is audited too (every APK starts with ``PK``). Returns
    whether an event was written."""
    now = now or utcnow()
    recent = db.execute(
        select(ApkDownloadEvent.id)
        .where(
            ApkDownloadEvent.token_id == token_id,
            ApkDownloadEvent.build_id == build_id,
            ApkDownloadEvent.created_at > now - DOWNLOAD_SESSION,
        )
        .limit(1)
    ).first()
    if recent is not None:
        return False
    record_apk_download(db, build_id=build_id, source=source, token_id=token_id, ip=ip)
    return True


def list_downloads(
    db: Session, *, since: datetime | None = None, limit: int = 100, before_id: int | None = None
) -> list[dict[str, Any]]:
    """Download events newest first (keyset: ``before_id`` is the last id of the previous page)."""
    query = (
        select(ApkDownloadEvent, ApkBuild.version_code, ApkBuild.version_name)
        .join(ApkBuild, ApkBuild.id == ApkDownloadEvent.build_id)
        .order_by(ApkDownloadEvent.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(ApkDownloadEvent.created_at >= since)
    if before_id is not None:
        query = query.where(ApkDownloadEvent.id < before_id)
    return [
        {
            "id": event.id,
            "build_id": event.build_id,
            "version_code": code,
            "version_name": name,
            "source": event.source,
            "token_id": event.token_id,
            "ip": event.ip,
            "created_at": event.created_at,
        }
        for event, code, name in db.execute(query).all()
    ]
