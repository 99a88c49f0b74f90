"""PostgreSQL's side of :mod:`core.ops.backup`: ``pg_dump`` / ``pg_restore`` in the custom format.

The tools get the database as a libpq connection string built from ``NEXMDM_DATABASE_URL`` (several hosts
and ``target_session_attrs`` included, so a backup finds the primary after a failover); the password goes
through ``PGPASSWORD``, never the command line. A restore pipes ``pg_restore``'s SQL into ``psql`` inside
one transaction that ``COMMIT``s only when ``pg_restore`` read the whole archive: a truncated archive
leaves the database as it was.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.base.errors import DatabaseUnavailable, InvalidArgument
from core.base.settings import normalize_database_url

#: ``progress(done, total)``: how far a backup or restore is, in the unit it counts (pages, bytes)
Progress = Callable[[int, int], None]

#: what a restore runs before the archive's SQL: the schema NexMDM lives in starts empty
_PROLOGUE = (
    b"\\set ON_ERROR_STOP on\n"
    b"SET client_min_messages = warning;\n"  # not a NOTICE per object the CASCADE drops
    b"BEGIN;\n"
    b"DROP SCHEMA IF EXISTS public CASCADE;\n"
    b"CREATE SCHEMA public;\n"
)
_CHUNK = 1 << 20
#: ``pg_restore: `` or ``psql:<stdin>:43: ``, in front of the tools' messages
_TOOL_PREFIX = re.compile(r"^(?:pg_restore: |psql:<stdin>:\d+: )")
_TABLE_LINE = re.compile(r'dumping contents of table "(?:[^"]+)\.([^"]+)"')


def tool(name: str) -> str:
    """The newest installed PostgreSQL client tool ``name`` (Debian keeps them per version)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise DatabaseUnavailable(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return path


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path))


def conninfo(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for ``url`` and the environment (the password) the tools need."""
    parsed = make_url(normalize_database_url(url))
    hosts = parsed.query.get("host")
    host_list = [hosts] if isinstance(hosts, str) else list(hosts or [])
    if host_list:
        names = [entry.rpartition(":")[0] if ":" in entry else entry for entry in host_list]
        ports = [entry.rpartition(":")[2] if ":" in entry else "5432" for entry in host_list]
        parts = {"host": ",".join(names), "port": ",".join(ports)}
    else:
        parts = {"host": parsed.host or "", "port": str(parsed.port or "")}
    parts |= {"dbname": parsed.database or "", "user": parsed.username or ""}
    for key, value in parsed.query.items():
        if key != "host" and key not in ("password",):
            parts[key] = value if isinstance(value, str) else ",".join(value)
    text_parts = [f"{key}='{_quote(value)}'" for key, value in parts.items() if value]
    password = parsed.password or parsed.query.get("password")
    env = os.environ | ({"PGPASSWORD": str(password)} if password else {})
    return " ".join(text_parts), env


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _tables(url: str) -> dict[str, int]:
    """Every table with rows to dump and its size on disk (the weights of the dump's progress)."""
    engine = create_engine(normalize_database_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.relname, pg_table_size(c.oid) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                    " AND n.nspname NOT LIKE 'pg_toast%'"
                )
            ).all()
    finally:
        engine.dispose()
    return {name: max(1, int(size)) for name, size in rows}


def dump(url: str, dest: Path, report: Progress) -> str | None:
    """``pg_dump --format=custom`` of the database into ``dest``; returns the dumped migration revision."""
    sizes = _tables(url)
    total, done = sum(sizes.values()), 0
    info, env = conninfo(url)
    command = [tool("pg_dump"), "--format=custom", "--verbose", f"--file={dest}", f"--dbname={info}"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # noqa: S603 - PostgreSQL's own tools by path, arguments as a list, no shell
    errors: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        match = _TABLE_LINE.search(line)
        if match:
            done += sizes.get(match.group(1), 0)
            report(min(done, total), total)
        elif "error" in line.lower():
            errors.append(line.strip())
    if proc.wait() != 0:
        raise DatabaseUnavailable(f"pg_dump failed: {errors[0] if errors else f'exit {proc.returncode}'}")
    report(total, total)
    return archive_revision(dest)


def archive_revision(path: Path) -> str:
    """The migration revision a custom-format archive holds (its ``alembic_version`` row)."""
    listed = subprocess.run(  # noqa: S603 - PostgreSQL's own tools by path, arguments as a list, no shell
        [tool("pg_restore"), "--list", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    if listed.returncode != 0:
        raise InvalidArgument(f"{path} is not a readable pg_dump archive: {_first(listed.stderr)}", field="path")
    data = subprocess.run(  # noqa: S603 - PostgreSQL's own tools by path, arguments as a list, no shell
        [tool("pg_restore"), "--data-only", "--table=alembic_version", "--file=-", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    lines = data.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("COPY ") and "alembic_version" in line]
    if data.returncode != 0 or not starts or starts[0] + 1 >= len(lines) or lines[starts[0] + 1] == "\\.":
        problem = _first(data.stderr) if data.returncode else "no migration table"
        raise InvalidArgument(f"{path} is not a NexMDM backup ({problem})", field="path")
    return lines[starts[0] + 1].strip()


def _first(stderr: str) -> str:
    lines = [_TOOL_PREFIX.sub("", line).strip() for line in stderr.splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def other_sessions(url: str) -> int:
    """Sessions of other clients connected to this database now."""
    engine = create_engine(normalize_database_url(url))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _evict(url: str) -> None:
    engine = create_engine(normalize_database_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            )
    finally:
        engine.dispose()


def _feed(path: Path, sink: IO[bytes], report: Progress) -> None:
    total, done = path.stat().st_size, 0
    try:
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                sink.write(chunk)
                done += len(chunk)
                report(done, total)
    except OSError:  # pg_restore stopped reading (a broken pipe): its own error says why
        return
    finally:
        with contextlib.suppress(OSError):
            sink.close()


def restore(path: Path, url: str, progress: Progress, *, evict: bool) -> None:
    """Replace the ``public`` schema with the archive's, in one transaction (see the module's docstring)."""
    if evict:
        _evict(url)
    info, env = conninfo(url)
    # the tools' messages go to files, not pipes: a full pipe nobody reads would stop them
    with tempfile.TemporaryFile() as psql_log, tempfile.TemporaryFile() as reader_log:
        psql = subprocess.Popen(  # noqa: S603 - PostgreSQL's own tools by path, arguments as a list, no shell
            [tool("psql"), "--no-psqlrc", "--quiet", f"--dbname={info}", "--file=-"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=psql_log,
        )
        reader = subprocess.Popen(  # noqa: S603 - PostgreSQL's own tools by path, arguments as a list, no shell
            [tool("pg_restore"), "--no-owner", "--no-privileges", "--file=-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=reader_log,
        )
        assert psql.stdin is not None and reader.stdin is not None and reader.stdout is not None
        feeder = threading.Thread(target=_feed, args=(path, reader.stdin, progress), daemon=True)
        feeder.start()
        ok = _pump(reader.stdout, psql.stdin)
        if not ok:
            reader.kill()  # psql stopped: nothing reads pg_restore's output any more
        feeder.join()
        complete = reader.wait() == 0 and ok
        try:
            if complete:
                psql.stdin.write(b"COMMIT;\n")
            psql.stdin.close()  # without COMMIT the server rolls the whole restore back when psql leaves
        except BrokenPipeError:
            complete = False
        failed = psql.wait() != 0
        psql_error, reader_error = _read(psql_log), _read(reader_log)
    if failed:
        raise DatabaseUnavailable(f"the restore failed, nothing changed: {_first(psql_error)}")
    if not complete:
        raise InvalidArgument(f"{path} is damaged or truncated, nothing changed: {_first(reader_error)}", field="path")


def _read(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")


def _pump(source: IO[bytes], sink: IO[bytes]) -> bool:
    try:
        sink.write(_PROLOGUE)
        while chunk := source.read(_CHUNK):
            sink.write(chunk)
    except BrokenPipeError:  # psql stopped (ON_ERROR_STOP): its stderr says why
        return False
    return True
