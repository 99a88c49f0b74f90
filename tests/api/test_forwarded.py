"""``nexmdm serve --forwarded-allow-ips``: behind a load balancer the limiter sees the client, not the balancer."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from core.models import AuditEvent
from nexmdm_cli.commands.demo import free_port, stop, wait_until_ready
from nexmdm_cli.main import app
from tests.support.databases import migrate


@contextmanager
def serving(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, database_url: str | None = None
) -> Iterator[str]:
    url = database_url or f"sqlite:///{tmp_path / 'fwd.db'}"
    if database_url is None and not (tmp_path / "fwd.db").exists():
        migrate(url)
    port = free_port()
    environ = os.environ | {
        "NEXMDM_DATABASE_URL": url,
        "NEXMDM_DATA_DIR": str(tmp_path / "data"),
        "NEXMDM_AUTH_FAILURE_LIMIT": "2",
    }
    environ.pop("NEXMDM_FORWARDED_ALLOW_IPS", None)
    with (tmp_path / "server.log").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", "from nexmdm_cli.main import run; run()", "serve", "--port", str(port), *args],
            env=environ | (env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", server)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(server)


def failures(url: str, forwarded_for: str, n: int) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for, "Authorization": "Bearer nxd_wrong"}
    return [httpx.get(f"{url}/v1/commands/pending", headers=headers).status_code for _ in range(n)]


def test_trusted_balancer_passes_on_the_client_address(tmp_path: Path) -> None:
    # the balancer (here: this test, on 127.0.0.1) is trusted: each client has its own failure count
    with serving(tmp_path, "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8") as url:
        assert failures(url, "203.0.113.7", 3) == [401, 401, 429]
        assert failures(url, "203.0.113.8", 1) == [401]  # another client behind the same balancer
        assert failures(url, "198.51.100.1, 203.0.113.9", 1) == [401]  # the last hop before the balancer


@pytest.mark.slow
def test_untrusted_peer_cannot_choose_its_address(tmp_path: Path) -> None:
    # from the environment; the peer 127.0.0.1 is not the configured balancer, so its header is ignored
    with serving(tmp_path, env={"NEXMDM_FORWARDED_ALLOW_IPS": "10.1.2.3"}) as url:
        assert failures(url, "203.0.113.7", 2) == [401, 401]
        assert failures(url, "203.0.113.8", 1) == [429]  # a new made-up address does not reset the count


@pytest.mark.parametrize("value", ["balancer.example", "10.0.0.0/33"])
def test_a_bad_value_is_one_line(value: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["--database-url", f"sqlite:///{tmp_path / 'x.db'}", "serve", "--forwarded-allow-ips", value]
    )
    assert result.exit_code == 2, result.output
    assert "NEXMDM_FORWARDED_ALLOW_IPS" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "junk",
    [
        ["x" * 70, "y" * 70, "z" * 70],
        ["balancer.example", "203.0.113.7.evil", "fe80::1%" + "e" * 60],  # a name, not an address, a long zone
        ["unknown", "_hidden", "1.2.3.4:99999x"],
    ],
    ids=["70-characters", "names-and-zones", "rfc7239-tokens"],
)
def test_a_forwarded_value_that_is_no_address_leaves_the_peer(
    junk: list[str], database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """From a trusted peer (loopback, the default) ``X-Forwarded-For: <70 characters>`` became the client
    "address": a fresh failed-auth key at every request, and on PostgreSQL an audit row that could not be
    stored (StringDataRightTruncation), which failed every later flush of the refusals."""
    with serving(tmp_path, database_url=database_url) as url:  # the failure limit is 2
        codes = [httpx.get(f"{url}/v1/devices", headers={"X-Forwarded-For": value}).status_code for value in junk]
        assert codes == [401, 401, 429]  # counted against the peer, 127.0.0.1, not three made-up clients
        assert failures(url, "203.0.113.7", 1) == [401]  # a real address from the trusted peer still counts
        assert httpx.get(f"{url}/v1/devices", headers={"X-Forwarded-For": "2001:DB8:0:0::4"}).status_code == 401
    with engine.connect() as conn:  # the refusals were written when the server stopped (or before)
        rows = conn.execute(select(AuditEvent.client_address, AuditEvent.count).where(AuditEvent.outcome == "denied"))
        counted: dict[str, int] = {}
        for address, count in rows:  # one row per minute: a run may straddle one
            counted[address] = counted.get(address, 0) + count
    # the device endpoint's 401 is no admin refusal; an address is stored in its short form
    assert counted == {"127.0.0.1": 3, "2001:db8::4": 1}
