"""Redis for tests: the shared server on 127.0.0.1:6379 under a key prefix of the test's own, or a throwaway
``redis-server`` on a free port (for tests that stop it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.pgcluster import free_port

SHARED_REDIS_URL = os.environ.get("NEXMDM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message + " (CI=true requires it)", pytrace=False)
    pytest.skip(message)


def shared_prefix() -> Iterator[tuple[str, str]]:
    """``(url, prefix)`` on the shared Redis; every key under the prefix is deleted afterwards."""
    import redis

    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis is not reachable at {SHARED_REDIS_URL}: {exc.__class__.__name__}")
    prefix = f"nexmdm-test-{uuid.uuid4().hex[:10]}:"
    try:
        yield SHARED_REDIS_URL, prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


class RedisServer:
    """A ``redis-server`` of the test's own on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server is not installed (.ci/run and `make services` install it)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
