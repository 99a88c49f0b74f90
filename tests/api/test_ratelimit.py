"""The in-process limiters, with an explicit clock."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from core.base.settings import Settings
from core.storage import redis_link
from nexmdm_api import create_app
from nexmdm_api.ratelimit import FailureLimiter, TokenBucket, client_key
from tests.support.api import bearer
from tests.support.fakes.apk import apk_bytes
from tests.support.fakes.stalled import StalledServer


def test_failure_limiter_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    """The contract: a limit of N means N failures are answered 401 and the (N+1)-th is 429."""
    limiter = FailureLimiter(limit=3, window=60)
    assert [limiter.fail("a", now=t) for t in (0, 1, 2)] == [None, None, None]  # three 401s
    assert limiter.retry_after("a", now=2) == 58  # blocked now: until the first failure leaves the window
    assert limiter.fail("a", now=3) == 58  # the fourth is refused, until t=61, when 1 leaves the window
    assert limiter.retry_after("a", now=30) == 31  # three failures (1, 2, 3) still in the window
    assert limiter.retry_after("b", now=30) is None  # per address
    assert limiter.retry_after("a", now=61) is None  # only two left in the window
    assert limiter.fail("a", now=61) is None  # the third in the window (2, 3, 61): a 401 again
    assert limiter.fail("a", now=61.5) == 1.5  # the fourth: 429 until t=63, when 2 and 3 have left
    assert FailureLimiter(limit=0, window=60).fail("a", now=0) is None  # disabled


def test_failure_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(limit=2, window=60, max_keys=10)
    for index in range(100):
        limiter.fail(f"ip{index}", now=index)
    assert len(limiter._failures) <= 10


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_minute=60, burst=3)
    assert [bucket.take("d", now=0) for _ in range(3)] == [None, None, None]
    wait = bucket.take("d", now=0)
    assert wait is not None and 0.9 < wait <= 1.0
    assert bucket.take("d", now=1.01) is None  # one token per second comes back
    assert bucket.take("other", now=0) is None
    assert TokenBucket(rate_per_minute=0, burst=1).take("d", now=0) is None  # disabled


def test_failure_limiter_evicts_in_constant_time_when_full() -> None:
    """Issue #11 item 8: a new address at capacity, none expired, scanned every tracked key (8 ms at 100k)."""
    limiter = FailureLimiter(limit=5, window=3600, max_keys=100_000)
    for index in range(100_000):
        limiter.fail(f"10.{index >> 16}.{(index >> 8) & 255}.{index & 255}", now=1.0)

    def thousand_new_keys(prefix: str) -> float:
        started = time.perf_counter()
        for index in range(1000):
            limiter.fail(f"{prefix}{index}", now=2.0)
        return time.perf_counter() - started

    full = thousand_new_keys("full-")
    empty = FailureLimiter(limit=5, window=3600, max_keys=100_000)
    started = time.perf_counter()
    for index in range(1000):
        empty.fail(f"empty-{index}", now=2.0)
    baseline = time.perf_counter() - started
    assert len(limiter._failures) == 100_000
    assert full < 20 * baseline + 0.05, (full, baseline)  # a scan per key is ~1000x


def test_failure_limiter_forgets_the_least_recently_failing_first() -> None:
    limiter = FailureLimiter(limit=3, window=60, max_keys=3)
    for key, now in (("a", 0), ("b", 1), ("c", 2), ("a", 3)):  # "a" failed again: "b" is now the oldest
        limiter.fail(key, now=now)
    limiter.fail("d", now=4)
    assert set(limiter._failures) == {"a", "c", "d"}
    assert len(limiter._failures["a"]) == 2
    limiter.fail("e", now=70)  # everything but nothing within the window is expired
    assert set(limiter._failures) == {"e"}


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("testclient") == "testclient"


# ------------------------------------------------------ valid credentials from a blocked address


def test_a_blocked_address_still_gets_in_with_any_valid_credential(
    api_settings: Settings, engine: Engine, make_token: Callable[..., str], admin_key: str
) -> None:
    """The limiter never refuses valid credentials: enrollment tokens, device tokens, admin keys, and
    every credential kind on APK downloads (whole fleets sit behind one carrier-NAT address)."""
    settings = api_settings.with_overrides(auth_failure_limit=2, auth_failure_window_seconds=600)
    enrollment = make_token(uses=10)
    with TestClient(create_app(settings)) as client:
        admin = bearer(admin_key)
        upload = client.post(
            "/v1/apk/builds",
            files={"file": ("a.apk", io.BytesIO(apk_bytes(b"build" * 50)))},
            data={"version_code": "3", "version_name": "3.0"},
            headers=admin,
        )
        assert upload.status_code == 201, upload.text
        device = client.post("/v1/enroll", json={"device_id": "dev_1"}, headers=bearer(enrollment))
        assert device.status_code == 201
        device_token = device.json()["device_token"]

        guesses = [client.get("/v1/devices", headers=bearer("nxa_" + "x" * 43)).status_code for _ in range(3)]
        assert guesses == [401, 401, 429]  # the address is blocked now
        assert client.get("/v1/devices").status_code == 429  # no credential at all: refused at once

        assert client.post("/v1/enroll", json={"device_id": "dev_2"}, headers=bearer(enrollment)).status_code == 201
        assert client.get("/v1/devices", headers=admin).status_code == 200
        assert client.post("/v1/heartbeat", json={"status": "ok"}, headers=bearer(device_token)).status_code == 201
        for token in (enrollment, device_token, admin_key):
            assert client.get("/v1/apk/latest", headers=bearer(token)).status_code == 200
            assert client.get("/v1/apk/download/latest", headers=bearer(token)).status_code == 200
        # and a bad guess of each kind is still refused
        assert client.post("/v1/enroll", json={"device_id": "x"}, headers=bearer("nxe_" + "y" * 43)).status_code == 429


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer nxa_" + "x" * 43}, {}], ids=["made-up-admin-key", "no-token"]
)
def test_a_stalled_redis_never_stalls_the_event_loop(
    api_settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    """The failed-auth limiter called the blocking Redis client on the event loop: while Redis hung, every
    request of the process (``/healthz`` too) waited for the Redis timeout."""
    monkeypatch.setattr(redis_link, "REDIS_TIMEOUT_SECONDS", 1.0)  # 0.25 s in production: longer, to see it
    with StalledServer() as redis:
        settings = api_settings.with_overrides(redis_url=redis.url, auth_failure_limit=5)
        with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
            refused = pool.submit(client.get, "/v1/devices", headers=headers)
            assert redis.asked.wait(10), "the limiter never asked Redis"
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            healthz = time.monotonic() - started
            assert refused.result(timeout=10).status_code == 401  # decided locally once Redis timed out
    assert healthz < 0.5, f"/healthz waited {healthz:.2f} s behind the limiter's Redis call"
