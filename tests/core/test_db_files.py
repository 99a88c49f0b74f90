"""Who may read NexMDM's files (issue #11 item 9): the folders it creates are 0700, its files 0600.

The SQLite database, its WAL and SHM files and the APK folder hold command payloads, FCM tokens and the
agent builds; a umask of 022 made them world-readable.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from sqlalchemy import text

from core.apk import builds as apk
from core.apk import storage as apk_storage
from core.base.settings import Settings
from core.storage.engine import make_engine
from tests.support.fakes.apk import apk_bytes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_folder_and_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "data" / "nexmdm.db"
        engine = make_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            files = {name: _mode(path.with_name(name)) for name in ("nexmdm.db", "nexmdm.db-wal", "nexmdm.db-shm")}
        engine.dispose()
    finally:
        os.umask(old_umask)
    assert _mode(path.parent) == 0o700
    assert files == {"nexmdm.db": 0o600, "nexmdm.db-wal": 0o600, "nexmdm.db-shm": 0o600}


def test_a_world_readable_database_from_an_older_version_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    os.chmod(tmp_path, 0o755)
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert _mode(path) == 0o600
    assert _mode(tmp_path) == 0o755  # an existing folder keeps the mode its operator chose


def test_the_apk_folder_and_files_are_private(tmp_path: Path, session_factory, settings: Settings) -> None:
    old_umask = os.umask(0o022)
    try:
        with session_factory.begin() as db:
            build = apk.add_build(db, settings, source=io.BytesIO(apk_bytes()), version_code=1, version_name="1")
    finally:
        os.umask(old_umask)
    with session_factory() as db:  # the folder storage's file, or the database storage's cached copy
        path = apk_storage.local_file(db, settings, apk.get_build(db, build["id"]))
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600
