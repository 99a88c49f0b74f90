"""Claims of the push queue are disjoint when several processes claim at once, on SQLite and PostgreSQL.

Three processes claim small batches as fast as they can until the queue is empty; every command is
claimed by exactly one of them. What keeps them apart is that a claim is one statement, ``UPDATE ... WHERE
id IN (SELECT ... LIMIT n) RETURNING``: on SQLite it takes the write lock as it starts (with or without
the ``BEGIN IMMEDIATE`` of ``core.storage.engine``), so a second claimer sees the first one's leases; on PostgreSQL
the inner ``SELECT`` locks with ``FOR UPDATE SKIP LOCKED``. The test guards that shape: a claim split into
a ``SELECT`` then an ``UPDATE`` in a deferred SQLite transaction, or a PostgreSQL claim without row locks,
would hand the same rows to two processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.models import Device, FcmDispatch
from core.storage.types import utcnow

COMMANDS = 1500
PROCESSES = 3

_CLAIMER = """
import json, sys, time
from core.storage.engine import engine_from_settings, make_session_factory
from core.commands.push import queue
from core.base.settings import get_settings
from core.storage.types import utcnow

settings = get_settings()
factory = make_session_factory(engine_from_settings(settings), settings)
start = float(sys.argv[1])
while time.time() < start:  # every claimer starts at the same moment
    time.sleep(0.001)
claimed, empty = [], 0
while empty < 3:
    with factory.begin() as db:
        rows = queue.claim(db, settings, now=utcnow(), limit=7)
    claimed += [r.id for r in rows]
    empty = 0 if rows else empty + 1
print(json.dumps(claimed))
"""


def test_concurrent_claimers_take_disjoint_rows(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    now = utcnow()
    with session_factory.begin() as db:
        db.add(Device(id="dev_c", fcm_token="tok"))
        db.flush()
        db.execute(
            insert(FcmDispatch),
            [
                {
                    "request_id": f"c_{i:05d}",
                    "device_id": "dev_c",
                    "action": "sync",
                    "payload_hash": "h",
                    "created_at": now,
                    "expires_at": None,
                }
                for i in range(COMMANDS)
            ],
        )
    env = os.environ | {
        "NEXMDM_DATABASE_URL": database_url,
        "NEXMDM_DATA_DIR": str(tmp_path / "data"),
        "NEXMDM_DELIVERY_LEASE_SECONDS": "600",
    }
    start = str(time.time() + 2.0)
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, start], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for claimer in claimers:
        out, err = claimer.communicate(timeout=120)
        assert claimer.returncode == 0, err.decode()
        results.append(json.loads(out))
    counts = Counter(i for claimed in results for i in claimed)
    assert len(counts) == COMMANDS
    assert [i for i, n in counts.items() if n > 1] == []  # no row claimed twice
    assert sum(1 for claimed in results if claimed) >= 2  # they did run side by side
