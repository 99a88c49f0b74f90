"""``core.ops.locks``: the maintenance lock is exclusive, and a cleanup that loses its lease stops."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from core.base.settings import Settings
from core.models import Device, FcmDispatch
from core.ops.locks import maintenance_lock
from core.storage.engine import make_engine, make_session_factory


def test_maintenance_lock_is_exclusive(engine) -> None:
    with maintenance_lock(engine) as first:
        assert first and not first.lost()
        other = make_engine(str(engine.url.render_as_string(hide_password=False)))
        with maintenance_lock(other) as second:
            assert not second
        other.dispose()
    with maintenance_lock(engine) as again:
        assert again


@pytest.mark.parametrize("backend", ["postgresql"])  # a flock beside the SQLite file is never lost
def test_a_cleanup_that_loses_its_lease_stops_at_the_next_batch(
    engine, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stalled holder whose lease passed to another node must not go on deleting beside it."""
    from core.base.errors import LockLost
    from core.models.lease import Lease
    from core.ops import locks, retention

    monkeypatch.setattr(locks, "LEASE_SECONDS", 3.0)  # renewed every second: the loss is seen within one
    factory = make_session_factory(engine, settings.with_overrides(cleanup_batch_size=10))
    old = datetime.now(UTC) - timedelta(days=400)
    with factory.begin() as db:
        db.add(Device(id="dev_old"))
        db.flush()
        for i in range(50):
            db.add(
                FcmDispatch(
                    request_id=f"old-{i}", device_id="dev_old", action="ping", payload_hash="0" * 64,
                    status="acked", created_at=old, finished_at=old,
                )
            )  # fmt: skip
    batches: list[str] = []

    class TakeTheLeaseAway(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if not message.startswith("cleanup_batch"):
                return
            batches.append(message)
            if "entity=fcm_dispatches" in message and "lease taken away" not in batches:
                with factory.begin() as db:  # its lease ran out during a pause and another node took it
                    db.execute(
                        update(Lease)
                        .where(Lease.name == "maintenance:cleanup")
                        .values(holder="other-node", expires_at=datetime.now(UTC) + timedelta(hours=1))
                    )
                deadline = time.monotonic() + 5  # the holder's next renewal (every second) finds it gone
                while not held.lost() and time.monotonic() < deadline:
                    time.sleep(0.05)
                batches.append("lease taken away")

    caplog.set_level(logging.INFO, logger="nexmdm.cleanup")
    handler = TakeTheLeaseAway()
    logging.getLogger("nexmdm.cleanup").addHandler(handler)
    try:
        with maintenance_lock(engine) as held, factory() as db, pytest.raises(LockLost):
            retention.run_all_retention_cleanups(db, lock_lost=held.lost)
    finally:
        logging.getLogger("nexmdm.cleanup").removeHandler(handler)
    assert batches[-1] == "lease taken away"  # no batch after it
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(FcmDispatch)) == 40  # one batch of 10 went
