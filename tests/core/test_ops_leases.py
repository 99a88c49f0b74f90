"""Leases (``core.ops.leases``): one holder at a time, renewal, expiry, release; on both databases.

TTLs are seconds, never fractions: a loaded machine can delay a transaction by more than a tenth of a
second. Where a test is about expiry it does not sleep: it moves the lease's ``expires_at`` into the past,
which is what the passing of the TTL does to the row.
"""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.models.lease import Lease
from core.ops import leases
from core.storage.types import utcnow
from tests.support.databases import run_together


def _take(factory: sessionmaker[Session], holder: str, ttl: float = 30, name: str = "job") -> bool:
    with factory.begin() as db:
        return leases.take(db, name, holder, ttl)


def _expire(factory: sessionmaker[Session], name: str = "job") -> None:
    """The holder stopped renewing and its TTL went by."""
    with factory.begin() as db:
        db.execute(update(Lease).where(Lease.name == name).values(expires_at=utcnow() - timedelta(hours=1)))


def _row(factory: sessionmaker[Session], name: str) -> tuple[str, object]:
    with factory() as db:
        holder, expires_at = db.execute(select(Lease.holder, Lease.expires_at).where(Lease.name == name)).one()
    return holder, expires_at


def test_one_holder_renews_others_wait_for_expiry_or_release(session_factory: sessionmaker[Session]) -> None:
    assert _take(session_factory, "a")
    assert _take(session_factory, "a")  # renewal
    assert not _take(session_factory, "b")
    with session_factory() as db:
        assert leases.holder_of(db, "job") == "a"
    with session_factory.begin() as db:
        assert not leases.release(db, "job", "b")  # only the holder releases
        assert leases.release(db, "job", "a")
    assert _take(session_factory, "b", ttl=5)
    assert not _take(session_factory, "a")
    _expire(session_factory)  # b stopped renewing: the lease passes on
    with session_factory() as db:
        assert leases.holder_of(db, "job") is None
    assert _take(session_factory, "a")
    with session_factory() as db:
        assert leases.holder_of(db, "job") == "a"


def test_taking_one_lease_never_takes_another(session_factory: sessionmaker[Session]) -> None:
    """The UPDATE's condition is (holder = me OR expired) for this name only: another name's expired lease
    is not this one's to take (a misplaced parenthesis would make two leaders)."""
    assert _take(session_factory, "a", name="maintenance")
    assert _take(session_factory, "x", name="metrics")
    _expire(session_factory, "metrics")
    before = _row(session_factory, "metrics")
    assert not _take(session_factory, "b", name="maintenance")
    assert _row(session_factory, "metrics") == before  # still x's, still expired: nobody took it
    with session_factory() as db:
        assert leases.holder_of(db, "maintenance") == "a"
    assert _take(session_factory, "b", name="metrics")  # taken by name, it passes on
    assert _row(session_factory, "maintenance")[0] == "a"


def test_racing_takers_get_one_lease(session_factory: sessionmaker[Session]) -> None:
    results = run_together(8, lambda i: _take(session_factory, f"h{i}"))
    assert sum(results) == 1


def test_held_renews_while_the_block_runs(session_factory: sessionmaker[Session]) -> None:
    with leases.held(session_factory, "long", ttl_seconds=3) as lost:  # renewed every second
        assert lost is not None
        _, first = _row(session_factory, "long")
        deadline = time.monotonic() + 20
        while _row(session_factory, "long")[1] == first:  # a renewal moves the expiry on
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.1)
        with leases.held(session_factory, "long", ttl_seconds=3) as second:
            assert second is None
        assert not lost.is_set()
    with leases.held(session_factory, "long", ttl_seconds=3) as again:  # released at the end
        assert again is not None


def test_a_holder_paused_past_its_lease_sees_it_lost_before_any_renewal(
    session_factory: sessionmaker[Session], monkeypatch
) -> None:
    # a process stopped for longer than the lease (a long GC pause, a frozen VM) resumes in its main
    # thread first: it must not need its renewal thread's next round trip to know the lease may be gone
    with leases.held(session_factory, "paused", ttl_seconds=30) as lost:
        assert lost is not None and not lost.is_set()
        resumed = time.monotonic() + 31
        monkeypatch.setattr(leases.time, "monotonic", lambda: resumed)
        assert lost.is_set()
