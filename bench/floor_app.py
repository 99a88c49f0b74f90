"""The HTTP floor for part 2: a minimal Litestar endpoint doing the one raw insert, nothing else.

No authentication, no validation beyond msgspec's, no ORM: one pooled psycopg2 connection per handler
thread in autocommit, one ``INSERT ... ON CONFLICT DO NOTHING`` per request. Run under uvicorn with the
same number of workers as ``nexmdm serve``; ``NEXMDM_BENCH_FLOOR_DSN`` names the database.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import msgspec
import psycopg2
from litestar import Litestar, Response, post

_local = threading.local()
_INSERT = (
    "INSERT INTO device_heartbeats (device_id, bucket_start, received_at, status, battery_pct, plugged, "
    "network_type, agent_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


class Beat(msgspec.Struct):
    device_id: str
    status: str = "ok"
    battery_pct: int | None = None
    plugged: bool | None = None
    network_type: str | None = None
    agent_version: str | None = None


def _cursor():
    cur = getattr(_local, "cur", None)
    if cur is None:
        conn = psycopg2.connect(os.environ["NEXMDM_BENCH_FLOOR_DSN"])
        conn.autocommit = True
        cur = _local.cur = conn.cursor()
    return cur


@post("/v1/heartbeat", sync_to_thread=True, status_code=201)
def heartbeat(data: Beat) -> Response[dict[str, bool]]:
    now = datetime.now(UTC)
    bucket = now.replace(second=now.second - now.second % 10, microsecond=0)
    cur = _cursor()
    cur.execute(
        _INSERT,
        (
            data.device_id,
            bucket,
            now,
            data.status,
            data.battery_pct,
            data.plugged,
            data.network_type,
            data.agent_version,
        ),
    )
    created = cur.rowcount == 1
    return Response({"created": created}, status_code=201 if created else 200)


app = Litestar([heartbeat])
