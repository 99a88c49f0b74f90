"""The in-process limiters, with an explicit clock."""

from __future__ import annotations

from nexmdm_api.ratelimit import FailureLimiter, TokenBucket


def test_failure_limiter_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    limiter = FailureLimiter(limit=3, window=60)
    assert [limiter.fail("a", now=t) for t in (0, 1, 2)] == [None, None, None]  # the limit's failures pass
    assert limiter.retry_after("a", now=2) == 58  # the next request is refused
    assert limiter.fail("a", now=3) == 58  # and so is the (limit + 1)-th failure
    assert limiter.retry_after("a", now=30) == 31
    assert limiter.retry_after("b", now=30) is None  # per address
    assert limiter.retry_after("a", now=62) is None  # enough failures left the window
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
