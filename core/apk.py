"""APK builds: add (copy and fingerprint), list, find the latest, and the download audit trail."""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import validation
from core.errors import Conflict, InvalidArgument, NotFound
from core.events.audit import Actor, record
from core.models import ApkBuild, ApkDownloadEvent
from core.settings import Settings
from core.types import utcnow

MAX_VERSION_CODE = 2_100_000_000  # Android's limit for versionCode
ZIP_MAGIC = b"PK\x03\x04"


def build_dict(build: ApkBuild) -> dict[str, Any]:
    return {
        "id": build.id,
        "version_code": build.version_code,
        "version_name": build.version_name,
        "size_bytes": build.size_bytes,
        "sha256": build.sha256,
        "filename": build.filename,
        "created_at": build.created_at,
    }


def build_path(settings: Settings, build: ApkBuild | dict[str, Any]) -> Path:
    filename = build["filename"] if isinstance(build, dict) else build.filename
    return Path(cast(Path, settings.apk_dir)) / filename  # set by Settings.__post_init__


def add_build(
    db: Session,
    settings: Settings,
    *,
    source: BinaryIO,
    version_code: int,
    version_name: str,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Copy an APK into the APK folder, fingerprint it (size, sha256) and record it.

    The file is written to a temporary name and renamed into place, so a reader never sees half a file;
    on any error nothing is left behind.
    """
    if isinstance(version_code, bool) or not isinstance(version_code, int) or not 1 <= version_code <= MAX_VERSION_CODE:
        raise InvalidArgument(f"version_code must be between 1 and {MAX_VERSION_CODE}", field="version_code")
    validation.text(version_name, "version_name", max_length=64, required=True)
    if db.execute(select(ApkBuild.id).where(ApkBuild.version_code == version_code)).first() is not None:
        raise Conflict(f"a build with version code {version_code} already exists")

    apk_dir = Path(cast(Path, settings.apk_dir))  # set by Settings.__post_init__
    apk_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=apk_dir, prefix=".upload-", suffix=".apk")
    try:
        with os.fdopen(fd, "wb") as out:
            first = True
            while chunk := source.read(1024 * 1024):
                if first and not chunk.startswith(ZIP_MAGIC[: len(chunk)]):
                    raise InvalidArgument("the file is not an APK (APKs are ZIP archives)", field="file")
                first = False
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if size == 0:
            raise InvalidArgument("the file is empty", field="file")
        sha256 = digest.hexdigest()
        filename = f"{version_code}-{sha256[:16]}.apk"
        build = ApkBuild(
            version_code=version_code,
            version_name=version_name,
            filename=filename,
            size_bytes=size,
            sha256=sha256,
            created_at=utcnow(),
        )
        db.add(build)
        try:
            db.flush()
        except IntegrityError:
            raise Conflict(f"a build with version code {version_code} already exists") from None
        record(db, actor, "apk.upload", str(build.id), version_code=version_code, sha256=sha256)
        os.replace(tmp_name, apk_dir / filename)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return build_dict(build)


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


def list_builds(db: Session) -> list[dict[str, Any]]:
    return [build_dict(b) for b in db.execute(select(ApkBuild).order_by(ApkBuild.version_code.desc())).scalars()]


def get_build(db: Session, build_id: int | None = None) -> ApkBuild:
    """A build by id, or the newest (highest version code) when ``build_id`` is None."""
    if build_id is None:
        build = db.execute(select(ApkBuild).order_by(ApkBuild.version_code.desc()).limit(1)).scalar_one_or_none()
        if build is None:
            raise NotFound("no APK build has been added yet")
        return build
    build = db.get(ApkBuild, build_id)
    if build is None:
        raise NotFound(f"no APK build {build_id}")
    return build


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
