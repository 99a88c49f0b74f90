"""The in-process limiters, with an explicit clock."""

from __future__ import annotations

import time

from nexmdm_api.ratelimit import FailureLimiter, TokenBucket, client_key


def test_failure_limiter_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    limiter = FailureLimiter(limit=3, window=60)
    assert limiter.fail("a", now=0) is None and limiter.fail("a", now=1) is None
    assert limiter.retry_after("a", now=1) is None
    assert limiter.fail("a", now=2) == 58
    assert limiter.retry_after("a", now=30) == 30
    assert limiter.retry_after("b", now=30) is None  # per address
    assert limiter.retry_after("a", now=61) is None  # the first failure left the window
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
