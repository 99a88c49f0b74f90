"""A PgBouncer of the test's own, in transaction mode, on a free port in front of a PostgreSQL server.

Its configuration is generated into a temporary folder; it runs as the ``postgres`` user when the test
runs as root (PgBouncer refuses root). Skips without the ``pgbouncer`` binary, fails under CI=true
(``.ci/run`` and ``make services`` install the Debian package).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support.pgcluster import free_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


class PgBouncer:
    def __init__(self, target_url: str, *, pool_size: int = 4) -> None:
        target = make_url(target_url)
        self.database = target.database or "postgres"
        self.target_host = target.host or "127.0.0.1"
        self.target_port = target.port or 5432
        self.user = target.username or "postgres"
        self.port = free_port()
        self.pool_size = pool_size
        self.dir = Path(tempfile.mkdtemp(prefix="nexmdm-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> PgBouncer:
        binary = _binary()
        if binary is None:
            message = "pgbouncer is not installed (make services installs it)"
            if IN_CI:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.target_host} port={self.target_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = 500\n"
            "server_reset_query =\nlog_connections = 0\nlog_disconnections = 0\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        command = [binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            for path in self.dir.iterdir():
                shutil.chown(path, "postgres", "postgres")
            command = [binary, "-u", "postgres", str(self.dir / "pgbouncer.ini")]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
