"""Point-in-time recovery with pgBackRest, following the recipe in docs/operations.md step by step.

A throwaway cluster (never the shared server) archives its WAL to a pgBackRest repository in a temporary
folder; a full backup is taken; rows are committed (acknowledged) before a moment T, and a mistake after
it (every device deleted, a change the schema allows). The cluster is stopped and restored to T with
``pgbackrest restore --type=time``: every row committed before T is there, the mistake is not, and the
database passes ``nexmdm schema check``. Runs as the ``postgres`` user, like the recipe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from core.base.settings import normalize_database_url
from nexmdm_cli.main import app
from tests.support.databases import IN_CI, migrate
from tests.support.pgcluster import Cluster

STANZA = "nexmdm"


class Archived(Cluster):
    """A cluster whose WAL goes to a pgBackRest repository (``archive_command``), as in the recipe."""

    def __init__(self) -> None:
        super().__init__()
        self.conf = self.dir / "pgbackrest.conf"

    def init(self) -> Archived:
        super().init()
        repo, logs = self.dir / "repo", self.dir / "log"
        self.conf.write_text(
            "[global]\n"
            f"repo1-path={repo}\nrepo1-retention-full=2\nlog-path={logs}\nlock-path={self.dir / 'lock'}\n"
            "start-fast=y\nlog-level-console=warn\nlog-level-file=info\n\n"
            f"[{STANZA}]\npg1-path={self.data}\npg1-port={self.port}\npg1-socket-path=/tmp\npg1-user=postgres\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# pgBackRest (docs/operations.md, point-in-time recovery)\n"
                "archive_mode = on\n"
                f"archive_command = 'pgbackrest --config={self.conf} --stanza={STANZA} archive-push %p'\n"
                "wal_level = replica\n"
            )
        for path in (repo, logs, self.dir / "lock"):
            path.mkdir()
        if self._as_postgres:
            for path in [self.conf, repo, logs, self.dir / "lock"]:
                shutil.chown(path, "postgres", "postgres")
        return self

    def pgbackrest(self, *args: str) -> str:
        command = ["pgbackrest", f"--config={self.conf}", f"--stanza={STANZA}", *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def sql(self, statement: str, **params: object) -> object:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                result = conn.execute(text(statement), params)
                return result.scalar() if result.returns_rows else None
        finally:
            engine.dispose()


@pytest.fixture
def archived() -> Iterator[Archived]:
    if shutil.which("pgbackrest") is None:
        message = "pgbackrest is not installed (make services)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    cluster = Archived().init()
    cluster.start()
    yield cluster
    cluster.destroy()


def _devices(cluster: Archived, ids: range, prefix: str) -> None:
    values = ", ".join(f"('{prefix}_{i:04d}', now())" for i in ids)
    cluster.sql(f"INSERT INTO devices (id, enrolled_at) VALUES {values}")


def test_restore_to_a_moment_before_a_mistake(archived: Archived, tmp_path: Path) -> None:
    url = normalize_database_url(archived.url)
    migrate(url)
    archived.pgbackrest("stanza-create")  # recipe step 2: the repository
    archived.pgbackrest("check")  # the archive_command works
    archived.pgbackrest("backup", "--type=full")  # step 3: the nightly full backup
    _devices(archived, range(500), "before")  # after the backup: only in the WAL
    time.sleep(1.1)
    target = str(archived.sql("SELECT now()::text"))  # T: what the operator reads off the log or the alert
    time.sleep(1.1)
    archived.sql("DELETE FROM devices")  # the mistake
    _devices(archived, range(3), "after")
    archived.pgbackrest("check")  # switches WAL and waits until it is archived (archive_timeout in production)

    archived.stop()  # step 4: stop, restore to T, start (the server promotes itself at T)
    archived.pgbackrest("restore", "--delta", "--type=time", f"--target={target}", "--target-action=promote")
    archived.start()
    deadline = time.monotonic() + 60
    while archived.sql("SELECT pg_is_in_recovery()"):
        assert time.monotonic() < deadline, "recovery did not finish"
        time.sleep(0.2)

    ids = archived.sql("SELECT string_agg(id, ',' ORDER BY id) FROM devices")
    assert str(ids).split(",") == [f"before_{i:04d}" for i in range(500)]
    check = CliRunner().invoke(app, ["--database-url", url, "schema", "check"], env={"NEXMDM_DATA_DIR": str(tmp_path)})
    assert check.exit_code == 0, check.stderr
    current = CliRunner().invoke(app, ["--database-url", url, "db", "current", "--json"])
    assert '"up_to_date": true' in current.stdout
    assert os.path.exists(archived.data / "postmaster.pid")
