"""``core.apk.builds``: an APK build is copied, fingerprinted and checked to be an APK."""

from __future__ import annotations

import io

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.apk import builds as apk
from core.apk import storage as apk_storage
from core.base.errors import Conflict, InvalidArgument
from core.base.settings import Settings
from tests.support.fakes.apk import apk_bytes


def test_apk_builds_are_copied_and_fingerprinted(session_factory: sessionmaker[Session], settings: Settings) -> None:
    data = apk_bytes(b"x" * 5000)
    with session_factory.begin() as db:
        build = apk.add_build(db, settings, source=io.BytesIO(data), version_code=3, version_name="1.3")
    with session_factory() as db:  # the folder's file (SQLite) or the node's cache filled from the database
        path = apk_storage.local_file(db, settings, apk.get_build(db, build["id"]))
    assert path.read_bytes() == data and build["size_bytes"] == len(data)
    with session_factory() as db:
        with pytest.raises(Conflict):
            apk.add_build(db, settings, source=io.BytesIO(data), version_code=3, version_name="again")
        with pytest.raises(InvalidArgument, match="not an APK"):
            apk.add_build(db, settings, source=io.BytesIO(b"hello"), version_code=4, version_name="x")
        for fake in (b"P", b"PK\x03\x04" + b"x" * 5000, apk_bytes(manifest=False)):  # magic alone is no APK
            with pytest.raises(InvalidArgument, match="not an APK"):
                apk.add_build(db, settings, source=io.BytesIO(fake), version_code=5, version_name="x")
        assert apk.get_build(db).version_code == 3
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no half-written upload left behind
