"""Leases (``core.ops.leases``): one holder at a time, renewal, expiry, release; on both databases."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from core.ops import leases
from tests.support.databases import run_together


def _take(factory: sessionmaker[Session], holder: str, ttl: float = 30) -> bool:
    with factory.begin() as db:
        return leases.take(db, "job", holder, ttl)


def test_one_holder_renews_others_wait_for_expiry_or_release(session_factory: sessionmaker[Session]) -> None:
    assert _take(session_factory, "a")
    assert _take(session_factory, "a")  # renewal
    assert not _take(session_factory, "b")
    with session_factory() as db:
        assert leases.holder_of(db, "job") == "a"
    with session_factory.begin() as db:
        assert not leases.release(db, "job", "b")  # only the holder releases
        assert leases.release(db, "job", "a")
    assert _take(session_factory, "b", ttl=0.2)
    assert not _take(session_factory, "a")
    time.sleep(0.3)  # b stopped renewing: the lease passes on
    assert _take(session_factory, "a")
    with session_factory() as db:
        assert leases.holder_of(db, "job") == "a"


def test_racing_takers_get_one_lease(session_factory: sessionmaker[Session]) -> None:
    results = run_together(8, lambda i: _take(session_factory, f"h{i}"))
    assert sum(results) == 1


def test_held_renews_while_the_block_runs(session_factory: sessionmaker[Session]) -> None:
    with leases.held(session_factory, "long", ttl_seconds=0.3) as lost:
        assert lost is not None
        time.sleep(0.7)  # past two ttls: renewed meanwhile
        with leases.held(session_factory, "long", ttl_seconds=0.3) as second:
            assert second is None
        assert not lost.is_set()
    with leases.held(session_factory, "long", ttl_seconds=0.3) as again:  # released at the end
        assert again is not None
