"""Backups and restores of the whole database: one file, the schema revision checked before anything changes.

SQLite goes through its online backup API (a consistent copy while ``nexmdm serve`` writes: the copy runs
inside one read transaction, which WAL mode lets writers work beside); PostgreSQL through ``pg_dump`` /
``pg_restore`` in the custom format (:mod:`core.ops.pg_backup`). A restore reads the backup's migration
revision first and refuses one from a newer NexMDM; it replaces the database in one transaction, so a
truncated or foreign file is an error that changes nothing.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from core.base.errors import Conflict, InvalidArgument
from core.ops import pg_backup
from core.ops.pg_backup import Progress
from core.storage.engine import private_dir, sqlite_file
from core.storage.schema_version import head_revision, known_revisions

if TYPE_CHECKING:
    from core.events.audit import Actor

Kind = Literal["sqlite", "postgresql"]

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"
#: SQLite pages copied per step of the backup API (4 MiB at the default page size): progress, not speed
_PAGES_PER_STEP = 1024


@dataclass(frozen=True)
class BackupFile:
    """What a backup file holds, read without changing anything."""

    path: Path
    kind: Kind
    revision: str
    size_bytes: int

    @property
    def schema(self) -> Literal["current", "older", "newer"]:
        """The backup's revision beside the code's: ``newer`` is a revision this code does not know."""
        if self.revision == head_revision():
            return "current"
        return "older" if self.revision in known_revisions() else "newer"


@dataclass(frozen=True)
class Result:
    path: Path
    kind: Kind
    revision: str | None
    size_bytes: int
    seconds: float


def _no_progress(_done: int, _total: int) -> None:
    return None


def kind_of(url: str) -> Kind:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def partial_path(dest: Path) -> Path:
    """Where a backup is written before it is complete (renamed into place at the end)."""
    return dest.with_name(dest.name + ".partial")


def check_destination(dest: Path) -> None:
    """A folder or a missing parent is bad input, refused before the database is touched."""
    if dest.is_dir():
        raise InvalidArgument(f"{dest} is a folder: name the backup file to write", field="path")
    if not dest.parent.is_dir():
        raise InvalidArgument(f"no folder {dest.parent} for the backup", field="path")


def backup(url: str, dest: Path, progress: Progress = _no_progress, *, actor: Actor | None = None) -> Result:
    """Write a backup of the database at ``url`` to ``dest`` (0600; replaced atomically when complete).

    With an ``actor``, a ``db.backup`` audit row is added afterwards (when the database is at the code's
    migration: an older schema is backed up before an upgrade, and its audit table may differ).
    """
    check_destination(dest)
    started = time.monotonic()
    partial = partial_path(dest)
    partial.unlink(missing_ok=True)
    try:
        if kind_of(url) == "sqlite":
            revision = _backup_sqlite(_sqlite_path(url), partial, progress)
        else:
            revision = pg_backup.dump(url, partial, progress)
        os.chmod(partial, 0o600)
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    result = Result(dest, kind_of(url), revision, dest.stat().st_size, time.monotonic() - started)
    _audit(url, actor, "db.backup", result)
    return result


def inspect(path: Path) -> BackupFile:
    """Read a backup's kind and revision; a missing, truncated or foreign file is :class:`InvalidArgument`."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}", field="path") from None
    if head.startswith(SQLITE_MAGIC):
        return BackupFile(path, "sqlite", _sqlite_revision(path), size)
    if head.startswith(PGDUMP_MAGIC):
        return BackupFile(path, "postgresql", pg_backup.archive_revision(path), size)
    raise InvalidArgument(
        f"{path} is not a NexMDM backup (neither a SQLite database nor a pg_dump custom archive)", field="path"
    )


def check_restorable(backup_file: BackupFile, url: str) -> None:
    """Refuse what cannot be restored into ``url``: another kind of database, or a newer schema."""
    if backup_file.kind != kind_of(url):
        raise InvalidArgument(
            f"{backup_file.path} is a {backup_file.kind} backup; the database is {kind_of(url)}", field="path"
        )
    if backup_file.schema == "newer":
        raise InvalidArgument(
            f"{backup_file.path} comes from a newer NexMDM (migration {backup_file.revision}; this code knows up to "
            f"{head_revision()}): restore it with that version",
            field="path",
        )


def users(url: str) -> int:
    """How many other processes (SQLite) or sessions (PostgreSQL) use the database now."""
    if kind_of(url) == "sqlite":
        return _sqlite_users(_sqlite_path(url))
    return pg_backup.other_sessions(url)


def restore(
    backup_file: BackupFile,
    url: str,
    progress: Progress = _no_progress,
    *,
    evict: bool = False,
    actor: Actor | None = None,
) -> Result:
    """Replace the database at ``url`` with ``backup_file``'s content, in one transaction.

    ``evict``: on PostgreSQL, end the other sessions of the database first (they would hold locks the
    restore waits for; servers reconnect by themselves). Call :func:`check_restorable` first. With an
    ``actor``, a ``db.restore`` audit row is added to the restored database when its schema is current.
    """
    started = time.monotonic()
    if backup_file.kind == "sqlite":
        _restore_sqlite(backup_file.path, _sqlite_path(url), progress)
    else:
        pg_backup.restore(backup_file.path, url, progress, evict=evict)
    elapsed = time.monotonic() - started
    result = Result(backup_file.path, backup_file.kind, backup_file.revision, backup_file.size_bytes, elapsed)
    _audit(url, actor, "db.restore", result)
    return result


def _audit(url: str, actor: Actor | None, action: str, result: Result) -> None:
    if actor is None or result.revision != head_revision():
        return
    from core.events import audit
    from core.storage.engine import make_engine, make_session_factory

    engine = make_engine(url, pool_size=1)
    try:
        with make_session_factory(engine).begin() as db:
            audit.record(
                db,
                actor,
                action,
                str(result.path.resolve()),
                size_bytes=result.size_bytes,
                revision=result.revision,
                seconds=round(result.seconds, 3),
            )
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- SQLite


def _sqlite_path(url: str) -> Path:
    path = sqlite_file(url)
    if path is None:
        raise InvalidArgument("only a SQLite database in a file can be backed up or restored", field="database_url")
    return path


def _step_progress(progress: Progress) -> Callable[[int, int, int], None]:
    def report(_status: int, remaining: int, total: int) -> None:
        progress(total - remaining, total)

    return report


def _backup_sqlite(source: Path, partial: Path, progress: Progress) -> str | None:
    if not source.exists():
        raise InvalidArgument(f"no database at {source}", field="database_url")
    src = sqlite3.connect(source, timeout=30, isolation_level=None)
    dst = sqlite3.connect(partial, isolation_level=None)
    try:
        # one read transaction for the whole copy: every step reads the same snapshot, so writers that
        # commit meanwhile neither restart the copy nor end up half in it
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        revision = _revision_of(src)
        src.backup(dst, pages=_PAGES_PER_STEP, progress=_step_progress(progress), sleep=0)
        src.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file (the restore turns WAL back on)
    finally:
        dst.close()
        src.close()
    return revision


def _revision_of(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return str(row[0]) if row else None


def _sqlite_revision(path: Path) -> str:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA quick_check").fetchone()
            revision = _revision_of(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidArgument(f"{path} is damaged or truncated: {exc}", field="path") from None
    if not check or check[0] != "ok":
        raise InvalidArgument(f"{path} is damaged or truncated: {check[0] if check else 'no answer'}", field="path")
    if revision is None:
        raise InvalidArgument(f"{path} is a SQLite database but not a NexMDM backup (no migration table)", field="path")
    return revision


def _restore_sqlite(source: Path, target: Path, progress: Progress) -> None:
    private_dir(target.parent)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target, timeout=30, isolation_level=None)
    try:
        # the destination is written in one transaction: readers see the old database or the new one
        src.backup(dst, pages=_PAGES_PER_STEP, progress=_step_progress(progress), sleep=0)
        dst.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        raise Conflict(f"cannot write {target}: {exc}") from None
    finally:
        dst.close()
        src.close()
    os.chmod(target, 0o600)


def _sqlite_users(path: Path) -> int:
    """Processes other than this one with the database (or its WAL) open, read from ``/proc`` (Linux).

    Only processes this user may inspect are seen: run every ``nexmdm`` command as the service user.
    """
    names = {str(path.resolve()), str(path.resolve()) + "-wal", str(path.resolve()) + "-shm"}
    found = 0
    for proc in Path("/proc").glob("[0-9]*"):
        if proc.name == str(os.getpid()):
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:  # gone, or not ours to read
            continue
        found += bool(links & names)
    return found
