"""``core.ops.backup`` below the CLI: progress reports, and a failed backup leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from core.base.errors import DatabaseUnavailable
from core.ops import backup
from core.storage.schema_version import head_revision


def test_progress_grows_to_the_total_on_both_databases(database_url: str, engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO devices (id, enrolled_at) VALUES ('dev_p', CURRENT_TIMESTAMP)"))
    seen: list[tuple[int, int]] = []

    made = backup.backup(database_url, tmp_path / "b", lambda done, total: seen.append((done, total)))

    assert made.revision == head_revision() and made.size_bytes > 0
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    engine.dispose()
    restored: list[tuple[int, int]] = []
    backup.restore(backup.inspect(tmp_path / "b"), database_url, lambda d, t: restored.append((d, t)), evict=True)
    assert restored and restored[-1][0] == restored[-1][1] > 0  # bytes of the archive, or SQLite's pages


def test_a_failed_backup_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "b"
    with pytest.raises((DatabaseUnavailable, OperationalError)):  # what the CLI maps to exit 5
        backup.backup("postgresql://postgres@127.0.0.1:1/nexmdm", target)
    assert list(tmp_path.iterdir()) == []
