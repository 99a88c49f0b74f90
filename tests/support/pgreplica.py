"""A throwaway primary and a streaming standby made with ``pg_basebackup`` (never the shared server).

The primary is a :class:`tests.support.pgcluster.Cluster` (``initdb`` allows replication connections from
127.0.0.1 by default); the standby is its base backup with ``-R`` (``standby.signal`` and
``primary_conninfo``), started on a port of its own. ``pause()``/``resume()`` stop and restart WAL replay
on the standby, so a test can make it lag on purpose.
"""

from __future__ import annotations

import subprocess
import time

from sqlalchemy import create_engine, text

from tests.support.pgcluster import Cluster, _bin, free_port


class Standby(Cluster):
    def __init__(self, primary: Cluster) -> None:
        super().__init__()
        self.primary = primary

    def init(self) -> Standby:
        import shutil

        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            _bin("pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        return self

    def _sql(self, statement: str) -> object:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                return conn.execute(text(statement)).scalar()
        finally:
            engine.dispose()

    def pause(self) -> None:
        self._sql("SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self._sql("SELECT pg_wal_replay_resume()")

    def wait_caught_up(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self._sql("SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"):
            if time.monotonic() > deadline:
                raise TimeoutError("the standby did not catch up")
            time.sleep(0.05)


def start_pair() -> tuple[Cluster, Standby]:
    primary = Cluster().init()
    primary.start()
    standby = Standby(primary)
    try:
        standby.init().start()
    except (subprocess.CalledProcessError, OSError):
        primary.destroy()
        standby.destroy()
        raise
    return primary, standby


__all__ = ["Standby", "free_port", "start_pair"]
