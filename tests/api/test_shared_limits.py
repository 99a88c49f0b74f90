"""Limits that hold across processes and nodes (Redis), and what happens when Redis is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from core.base.settings import Settings
from core.storage import redis_link
from nexmdm_api import create_app
from nexmdm_api.shared_limits import RedisLink, SharedFailureLimiter, SharedTokenBucket
from tests.support.redis_server import RedisServer, shared_prefix


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


BAD = {"Authorization": "Bearer nxd_" + "x" * 43}


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    yield from shared_prefix()


def test_failures_spread_over_processes_are_counted_once(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    # three processes of one node, or three nodes: each with its own client and in-process counts
    limiters = [SharedFailureLimiter(RedisLink(url, prefix), limit=20, window=60) for _ in range(3)]
    waits = [limiters[i % 3].fail("203.0.113.7") for i in range(25)]
    assert waits[:20] == [None] * 20  # the configured 20 pass, wherever they landed
    assert all(wait is not None and 1 <= wait <= 60 for wait in waits[20:])
    assert all(limiter.retry_after("203.0.113.7") for limiter in limiters)
    assert limiters[0].retry_after("198.51.100.1") is None  # per address
    assert all(limiter._failures["203.0.113.7"] for limiter in limiters)  # the fallback keeps counting too


def test_heartbeat_bucket_is_shared(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    a, b = (SharedTokenBucket(RedisLink(url, prefix), rate_per_minute=1, burst=3) for _ in range(2))
    assert [a.take("dev"), b.take("dev"), a.take("dev")] == [None, None, None]
    wait = b.take("dev")
    assert wait is not None and 55 < wait <= 60  # one token a minute
    assert a.take("other") is None


def test_two_apps_share_the_failed_auth_limit(
    api_settings: Settings, engine, make_token, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    settings = api_settings.with_overrides(redis_url=url, redis_key_prefix=prefix, auth_failure_limit=3)
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        codes = [(a, b)[i % 2].post("/v1/heartbeat", json={}, headers=BAD).status_code for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        token = make_token()
        enrolled = b.post("/v1/enroll", json={"device_id": "dev_r"}, headers={"Authorization": f"Bearer {token}"})
        assert enrolled.status_code == 201  # valid credentials from a blocked address still pass
        good = {"Authorization": f"Bearer {enrolled.json()['device_token']}"}
        assert a.post("/v1/heartbeat", json={"status": "ok"}, headers=good).status_code == 201


def test_redis_down_keeps_serving_per_process(
    api_settings: Settings, engine, make_token, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_link, "RETRY_AFTER_SECONDS", 0.2)
    server = RedisServer().start()
    try:
        settings = api_settings.with_overrides(redis_url=server.url, redis_key_prefix="t:", auth_failure_limit=2)
        with TestClient(create_app(settings)) as client:
            token = make_token()
            enrolled = client.post(
                "/v1/enroll", json={"device_id": "dev_d"}, headers={"Authorization": f"Bearer {token}"}
            )
            good = {"Authorization": f"Bearer {enrolled.json()['device_token']}"}
            assert client.post("/v1/heartbeat", json={}, headers=BAD).status_code == 401  # counted in Redis
            server.stop()
            records = Records()
            logging.getLogger("nexmdm.api").addHandler(records)
            answers: list[Any] = []
            for _ in range(3):
                answers.append(client.post("/v1/heartbeat", json={"status": "ok"}, headers=good).status_code)
                answers.append(client.post("/v1/heartbeat", json={}, headers=BAD).status_code)
            # valid beats are stored (one bucket: 201 then 200), bad ones limited by the process's own count
            assert answers == [201, 401, 200, 429, 200, 429]
            down = [r for r in records.records if "redis_unavailable" in r.getMessage()]
            assert len(down) == 1  # logged once, not per request
            metrics = client.get("/metrics").text
            assert 'nexmdm_redis_fallbacks_total{limiter="auth"}' in metrics
            assert 'nexmdm_redis_fallbacks_total{limiter="heartbeat"}' in metrics

            server.start()  # back (empty: it keeps nothing) on the same port
            time.sleep(redis_link.RETRY_AFTER_SECONDS + 0.1)
            # counted in Redis again from zero; the process's own count (already over) no longer decides
            assert [client.post("/v1/heartbeat", json={}, headers=BAD).status_code for _ in range(3)] == [401, 401, 429]
            logging.getLogger("nexmdm.api").removeHandler(records)
            assert any("redis_available" in r.getMessage() for r in records.records)
    finally:
        server.stop()
