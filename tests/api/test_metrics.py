"""Metrics are created once even when many handler threads count their first event at the same moment.

(prometheus_client raises ``DuplicateTimeseries`` on a second creation: a 500 under load before this.)
"""

from __future__ import annotations

import threading
import time
import uuid

from nexmdm_api import metrics


def test_first_use_from_many_threads_creates_one_metric() -> None:
    barrier = threading.Barrier(32)
    made: list[object] = []
    seen: list[object] = []
    name = f"nexmdm_test_{uuid.uuid4().hex}"

    def make() -> object:
        time.sleep(0.01)  # widen the window a racing creation would fall into
        made.append(object())
        return made[-1]

    def use() -> None:
        barrier.wait()
        seen.append(metrics._metric(name, make))

    threads = [threading.Thread(target=use) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    assert all(m is made[0] for m in seen) and len(seen) == 32
