"""APK contents in the database: every node serves every build, from a verified cache of its own."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from core.apk import builds as apk
from core.apk import storage as apk_storage
from core.base.errors import InvalidArgument
from core.base.settings import Settings
from nexmdm_api import create_app
from tests.support.fakes.apk import apk_bytes

APK = apk_bytes(os.urandom(3 * 1024 * 1024))  # four chunks, the last one short


def node(settings: Settings, name: str, tmp_path: Path) -> Settings:
    """Another node: same database, its own disk."""
    return settings.with_overrides(data_dir=tmp_path / name, apk_storage="database")


def upload(client: TestClient[Any], admin: dict[str, str], content: bytes = APK, code: str = "7") -> Any:
    return client.post(
        "/v1/apk/builds",
        files={"file": ("agent.apk", io.BytesIO(content))},
        data={"version_code": code, "version_name": "0.7"},
        headers=admin,
    )


def blob_count(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as db:
        return (
            db.execute(text("SELECT count(*) FROM apk_blobs")).scalar_one(),
            db.execute(text("SELECT count(*) FROM apk_chunks")).scalar_one(),
        )


def test_uploaded_on_one_node_downloads_from_another(
    settings: Settings, engine, admin: dict[str, str], tmp_path: Path, session_factory
) -> None:
    a, b = node(settings, "a", tmp_path), node(settings, "b", tmp_path)
    with TestClient(create_app(a)) as node_a, TestClient(create_app(b)) as node_b:
        built = upload(node_a, admin)
        assert built.status_code == 201, built.text
        sha = hashlib.sha256(APK).hexdigest()
        assert blob_count(session_factory) == (1, 4)
        assert not (tmp_path / "b" / "apk-cache").exists()
        first = node_b.get("/v1/apk/download/latest", headers=admin | {"Range": "bytes=0-99999"})
        assert first.status_code == 206 and first.content == APK[:100000]
        rest = node_b.get("/v1/apk/download/latest", headers=admin | {"Range": "bytes=100000-", "If-Range": f'"{sha}"'})
        assert rest.status_code == 206 and first.content + rest.content == APK
        assert (tmp_path / "b" / "apk-cache" / f"{sha}.apk").read_bytes() == APK  # B serves from its cache now
        assert node_b.get("/v1/apk/download/latest", headers=admin).content == APK


def test_a_failed_upload_leaves_nothing(settings: Settings, engine, session_factory, tmp_path: Path) -> None:
    a = node(settings, "a", tmp_path)
    with session_factory() as db:  # stored, then the transaction rolls back: no build, no bytes
        apk.add_build(db, a, source=io.BytesIO(APK), version_code=1, version_name="1")
        db.rollback()
    with session_factory() as db, pytest.raises(InvalidArgument):
        apk.add_build(db, a, source=io.BytesIO(b"not a zip"), version_code=2, version_name="2")
    assert blob_count(session_factory) == (0, 0)
    assert [p.name for p in (tmp_path / "a" / "apk-cache").iterdir() if p.name.startswith(".")] == []
    with session_factory() as db:
        assert apk.list_builds(db) == []


def test_same_bytes_twice_are_stored_once_and_removed_with_the_last_build(
    settings: Settings, engine, session_factory, tmp_path: Path
) -> None:
    a = node(settings, "a", tmp_path)
    with session_factory.begin() as db:
        apk.add_build(db, a, source=io.BytesIO(APK), version_code=1, version_name="1")
        apk.add_build(db, a, source=io.BytesIO(APK), version_code=2, version_name="2")
    assert blob_count(session_factory) == (1, 4)
    with session_factory.begin() as db:
        apk_storage.forget(db, a, apk.get_build(db, 1))
    assert blob_count(session_factory) == (1, 4)  # build 2 still needs them
    with session_factory.begin() as db:
        db.delete(apk.get_build(db, 1))
        apk_storage.forget(db, a, apk.get_build(db, 2))
    assert blob_count(session_factory) == (0, 0)


def test_files_of_the_folder_storage_migrate(
    settings: Settings, engine, admin: dict[str, str], session_factory, tmp_path: Path
) -> None:
    old = settings.with_overrides(data_dir=tmp_path / "a", apk_storage="folder")
    with session_factory.begin() as db:
        build = apk.add_build(db, old, source=io.BytesIO(APK), version_code=3, version_name="3")
    assert blob_count(session_factory) == (0, 0)
    a, b = node(settings, "a", tmp_path), node(settings, "b", tmp_path)
    with TestClient(create_app(b)) as node_b:  # B never had the file: nothing to serve yet
        missing = node_b.get("/v1/apk/download/latest", headers=admin)
        assert missing.status_code == 404 and "no file on this node" in missing.json()["detail"]
    with TestClient(create_app(a)) as node_a:  # A has it: its first download imports it
        assert node_a.get("/v1/apk/download/latest", headers=admin).content == APK
    assert blob_count(session_factory) == (1, 4)
    with TestClient(create_app(b)) as node_b:
        assert node_b.get(f"/v1/apk/download/{build['id']}", headers=admin).content == APK


def test_contents_that_do_not_match_are_never_served(
    settings: Settings, engine, admin: dict[str, str], session_factory, tmp_path: Path
) -> None:
    a, b = node(settings, "a", tmp_path), node(settings, "b", tmp_path)
    with session_factory.begin() as db:
        apk.add_build(db, a, source=io.BytesIO(APK), version_code=4, version_name="4")
    with engine.begin() as conn:
        conn.execute(text("UPDATE apk_chunks SET data = :d WHERE seq = 1"), {"d": b"\0" * (1024 * 1024)})
    with TestClient(create_app(b)) as node_b:
        response = node_b.get("/v1/apk/download/latest", headers=admin)
        assert response.status_code == 404 and "SHA-256" in response.json()["detail"]
    assert not any((tmp_path / "b" / "apk-cache").iterdir())


def test_a_node_imports_the_files_it_holds_at_start(
    settings: Settings, engine, session_factory, tmp_path: Path
) -> None:
    old = settings.with_overrides(data_dir=tmp_path / "a", apk_storage="folder")
    with session_factory.begin() as db:
        apk.add_build(db, old, source=io.BytesIO(APK), version_code=5, version_name="5")
    with TestClient(create_app(node(settings, "a", tmp_path))):
        deadline = time.monotonic() + 20
        while blob_count(session_factory) != (1, 4):  # no download needed: the maintenance thread's first round
            assert time.monotonic() < deadline, "not imported"
            time.sleep(0.05)


def test_a_cached_file_changed_to_the_same_size_is_never_served(
    settings: Settings, engine, admin: dict[str, str], session_factory, tmp_path: Path
) -> None:
    """Issue #21: the cache was checked only by size, so a same-size change was served under the old ETag."""
    a, b = node(settings, "a", tmp_path), node(settings, "b", tmp_path)
    with session_factory.begin() as db:
        apk.add_build(db, a, source=io.BytesIO(APK), version_code=6, version_name="6")
    sha = hashlib.sha256(APK).hexdigest()
    with TestClient(create_app(b)) as node_b:
        first = node_b.get("/v1/apk/download/latest", headers=admin)
        assert first.status_code == 200 and first.content == APK
        cached = tmp_path / "b" / "apk-cache" / f"{sha}.apk"
        cached.chmod(0o600)
        with cached.open("r+b") as handle:  # same size, other bytes, in place (same inode)
            handle.seek(len(APK) // 2)
            handle.write(b"\xff" * 4096)
        assert cached.stat().st_size == len(APK)
        again = node_b.get("/v1/apk/download/latest", headers=admin)
        assert again.status_code == 200 and again.headers["etag"] == f'"{sha}"'
        assert hashlib.sha256(again.content).hexdigest() == sha
        assert cached.read_bytes() == APK  # filled again from the database
        assert cached.stat().st_mode & 0o222 == 0  # read-only, as it was checked
