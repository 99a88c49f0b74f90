"""A throwaway pg_auto_failover formation: a monitor, a primary and a synchronous secondary.

Debian's ``pg-auto-failover-cli`` and ``postgresql-15-auto-failover`` (installed by ``make services``).
Each ``pg_autoctl`` runs as the ``postgres`` user in its own process group, in a temporary folder (data,
configuration and state through ``XDG_*``), on free ports of 127.0.0.1; never the shared server.

The monitor's health checks are tightened (a check every second, a node unhealthy after 2 s, the old
primary given 2 s to demote itself) so that a failover takes seconds rather than the defaults' ~35 s.
The short demote timeout is safe with synchronous replication: an old primary that is still alive but cut
off cannot commit anything without its standby, which has stopped replicating from it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from tests.support.pgcluster import _bin, free_port

PG_AUTOCTL = "/usr/bin/pg_autoctl"
#: the monitor's settings for a fast failover (milliseconds); see the module's docstring
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": 1000,
    "pgautofailover.health_check_timeout": 1000,
    "pgautofailover.health_check_max_retries": 1,
    "pgautofailover.health_check_retry_delay": 500,
    "pgautofailover.node_considered_unhealthy_timeout": 2000,
    "pgautofailover.primary_demote_timeout": 2000,
    "pgautofailover.startup_grace_period": 1000,
}


@dataclass
class Node:
    name: str
    port: int
    data: Path
    proc: subprocess.Popen[bytes] | None = None

    def postmaster_pid(self) -> int | None:
        """The running postmaster of this node's data folder (never a reused pid of another process)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            if str(self.data).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        return None


@dataclass
class Formation:
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nexmdm-paf-")))
    monitor: Node = field(init=False)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.monitor = Node("monitor", free_port(), self.dir / "monitor")
        self.nodes = [Node(name, free_port(), self.dir / name) for name in ("node_a", "node_b")]
        self._as_postgres = os.geteuid() == 0

    # ------------------------------------------------------------------ addresses

    @property
    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.monitor.port}/pg_auto_failover?sslmode=disable"

    @property
    def url(self) -> str:
        """The application's URL: both nodes, the writable one chosen by libpq."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/nexmdm?target_session_attrs=read-write"

    def node_url(self, node: Node) -> str:
        return f"postgresql://postgres@127.0.0.1:{node.port}/nexmdm"

    # ------------------------------------------------------------------ processes

    def _env(self) -> list[str]:
        xdg = self.dir / "xdg"
        pairs = {
            "XDG_CONFIG_HOME": xdg / "config",
            "XDG_DATA_HOME": xdg / "data",
            "XDG_RUNTIME_DIR": xdg / "run",
            "PG_CONFIG": Path(_bin("pg_config")),
            "PATH": f"{Path(_bin('pg_ctl')).parent}:/usr/bin:/bin",
        }
        return ["env", *(f"{key}={value}" for key, value in pairs.items())]

    def _spawn(self, node: Node, *args: str) -> None:
        command = [*self._env(), PG_AUTOCTL, *args, "--pgdata", str(node.data), "--pgport", str(node.port)]
        command += ["--hostname", "127.0.0.1", "--listen", "127.0.0.1", "--auth", "trust", "--no-ssl", "--run"]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        with (self.dir / f"{node.name}.log").open("ab") as log:
            node.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout: float = 90) -> Formation:
        if not Path(PG_AUTOCTL).exists():
            raise FileNotFoundError(f"{PG_AUTOCTL} is not installed (make services)")
        for folder in ("xdg/config", "xdg/data", "xdg/run"):
            (self.dir / folder).mkdir(parents=True)
        if self._as_postgres:
            for path in [self.dir, *self.dir.rglob("*")]:
                shutil.chown(path, "postgres", "postgres")
        deadline = time.monotonic() + timeout
        self._spawn(self.monitor, "create", "monitor")
        self._wait(lambda: self._monitor_sql("SELECT 1") == 1, deadline, "the monitor did not start")
        self._tune_monitor()
        first, second = self.nodes
        self._spawn(
            first, "create", "postgres", "--monitor", self.monitor_uri, "--dbname", "nexmdm", "--name", first.name
        )
        self._wait(lambda: self.state(first) == ("single", "single"), deadline, "the first node did not start")
        self._spawn(
            second, "create", "postgres", "--monitor", self.monitor_uri, "--dbname", "nexmdm", "--name", second.name
        )

        def secondary_ready() -> bool:
            # pg_basebackup waits for a checkpoint, spread over minutes by default: ask for one now
            with contextlib.suppress(psycopg2.Error):
                self._sql(first, "CHECKPOINT")
            return self.state(second) == ("secondary", "secondary") and self.state(first) == ("primary", "primary")

        self._wait(secondary_ready, deadline, "the secondary did not catch up", every=1.0)
        return self

    def _wait(self, ready: object, deadline: float, what: str, every: float = 0.2) -> None:
        while True:
            with contextlib.suppress(psycopg2.Error):
                if ready():  # type: ignore[operator]
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}; logs in {self.dir}")
            time.sleep(every)

    def _tune_monitor(self) -> None:
        conn = psycopg2.connect(host="127.0.0.1", port=self.monitor.port, user="postgres", dbname="pg_auto_failover")
        conn.autocommit = True
        with conn.cursor() as cur:  # not `with conn`: psycopg2 would open a transaction, ALTER SYSTEM refuses one
            for name, value in MONITOR_SETTINGS.items():
                cur.execute(f"ALTER SYSTEM SET {name} = {int(value)}")
            cur.execute("SELECT pg_reload_conf()")
        conn.close()

    # ------------------------------------------------------------------ state

    def _monitor_sql(self, statement: str, *args: object) -> object:
        conn = psycopg2.connect(self.monitor_uri, connect_timeout=2)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                row = cur.fetchone()
                return row[0] if row and len(row) == 1 else row
        finally:
            conn.close()

    def _sql(self, node: Node, statement: str) -> object:
        conn = psycopg2.connect(host="127.0.0.1", port=node.port, user="postgres", dbname="nexmdm", connect_timeout=2)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchone()[0] if cur.description else None
        finally:
            conn.close()

    def state(self, node: Node) -> tuple[str, str] | None:
        """The node's (reported, assigned) state on the monitor."""
        row = self._monitor_sql(
            "SELECT reportedstate::text, goalstate::text FROM pgautofailover.node WHERE nodename = %s", node.name
        )
        return tuple(row) if row else None  # type: ignore[return-value,arg-type]

    def primary(self) -> Node:
        for node in self.nodes:
            if self.state(node) == ("primary", "primary"):
                return node
        raise LookupError("no primary")

    def synchronous_standby_names(self, node: Node) -> str:
        return str(self._sql(node, "SHOW synchronous_standby_names"))

    def writable(self, node: Node) -> bool:
        with contextlib.suppress(psycopg2.Error):
            return self._sql(node, "SHOW transaction_read_only") == "off"
        return False

    def kill(self, node: Node) -> None:
        """The node dies: SIGKILL to its postmaster, the postmaster's children and its ``pg_autoctl``.

        The keeper alone would restart PostgreSQL (a restart, not a failover). The children are PostgreSQL
        backends in sessions of their own (``setsid``): left alone, a backend in the middle of a commit
        finishes it before it notices that the postmaster is gone, as it would not on a machine that died.
        """
        postmaster = node.postmaster_pid()
        assert node.proc is not None
        doomed = [postmaster, *_children(postmaster)] if postmaster is not None else []
        os.killpg(node.proc.pid, signal.SIGKILL)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.proc.wait(10)

    def destroy(self) -> None:
        for node in [*self.nodes, self.monitor]:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGTERM)
        for node in [*self.nodes, self.monitor]:
            if node.proc is None:
                continue
            try:
                node.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
            postmaster = node.postmaster_pid()
            if postmaster is not None:  # a postmaster its pg_autoctl no longer stops
                with contextlib.suppress(ProcessLookupError):
                    os.kill(postmaster, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found
