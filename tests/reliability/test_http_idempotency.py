"""Concurrent identical command requests over real HTTP (``nexmdm serve`` in its own process).

The TestClient runs one request at a time, so these tests start the real server on a free port, point its
delivery worker at the fake FCM, and fire all requests at once from an asyncio client (one connection
each). Issue #7, item 2: one row, at most one push, every answer a 202 or a 200 replay of the same
dispatch, never a 5xx and never "database is locked"; on PostgreSQL with 200 requests, on SQLite with 50.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.models import Device, FcmDispatch
from nexmdm_cli.commands.demo import free_port, stop, wait_until_ready
from tests.support.fakes.fcm import FakeFcm, write_service_account

#: concurrent requests per backend (the issue's figures)
CONCURRENCY = {"postgresql": 200, "sqlite": 50}
#: what a replay must repeat exactly (replay_count and the push's progress may move between answers)
STABLE_FIELDS = ("request_id", "device_id", "action", "payload", "status", "created_at")


@dataclass
class Server:
    url: str
    log: Path
    admin: dict[str, str]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def workers() -> int:
    return 1


@pytest.fixture
def server(
    settings: Settings, session_factory: sessionmaker[Session], fake_fcm: FakeFcm, tmp_path: Path, workers: int
) -> Iterator[Server]:
    """``nexmdm serve`` on a free port with push through the fake FCM, an admin key and two devices.

    With several workers each process has its own pool, its own SQLite write queue and its own delivery
    worker, so the row lock (PostgreSQL) or SQLite's busy handler and the delivery lease are what keep the
    answers and the push single.
    """
    with session_factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="ops")
        db.add_all([Device(id="dev_http", fcm_token="fcm-dev-http"), Device(id="dev_other", fcm_token="fcm-other")])
    key_file = write_service_account(tmp_path / "sa.json", f"{fake_fcm.url}/token")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "NEXMDM_DATABASE_URL": settings.database_url,
        "NEXMDM_DATA_DIR": str(tmp_path / "data"),
        "NEXMDM_FCM_CREDENTIALS": str(key_file),
        "NEXMDM_FCM_ENDPOINT": fake_fcm.url,
        "NEXMDM_DELIVERY_POLL_SECONDS": "0.05",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from nexmdm_cli.main import run; run()",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready(url, process, timeout=60)
            yield Server(url, log_path, {"Authorization": f"Bearer {secret}"})
        finally:
            stop(process)


def fire(url: str, requests: list[tuple[str, dict[str, str], dict[str, Any]]]) -> list[httpx.Response]:
    """Send every ``(path, headers, json)`` at the same moment, each on its own connection."""

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            go = asyncio.Event()

            async def one(path: str, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
                await go.wait()
                return await client.post(path, headers=headers, json=body)

            tasks = [asyncio.create_task(one(*request)) for request in requests]
            await asyncio.sleep(0)  # every task is parked on the event
            go.set()
            return await asyncio.gather(*tasks)

    return asyncio.run(main())


def until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rows_for(session_factory: sessionmaker[Session], request_id: str) -> list[FcmDispatch]:
    with session_factory() as db:
        return list(db.execute(select(FcmDispatch).where(FcmDispatch.request_id == request_id)).scalars())


def assert_no_server_errors(responses: list[httpx.Response], server: Server) -> None:
    statuses = Counter(r.status_code for r in responses)
    assert not [s for s in statuses if s >= 500], f"5xx answers: {statuses}"
    assert not [r for r in responses if "locked" in r.text.lower()], "'database is locked' reached a client"
    log = server.log_text()
    assert "Traceback" not in log and "database is locked" not in log, log[-3000:]


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_concurrent_identical_commands_make_one_dispatch_and_one_push(
    backend: str, server: Server, session_factory: sessionmaker[Session], fake_fcm: FakeFcm
) -> None:
    n = CONCURRENCY[backend]
    key = f"concurrent-{backend}"
    body = {"action": "ring", "payload": {"seconds": 5}}
    headers = server.admin | {"Idempotency-Key": key}
    responses = fire(server.url, [("/v1/devices/dev_http/commands", headers, body)] * n)

    assert_no_server_errors(responses, server)
    statuses = Counter(r.status_code for r in responses)
    # ON CONFLICT waits for the first insert to commit, so no request is ever told "in flight" (no 409)
    assert statuses == {202: 1, 200: n - 1}, statuses
    first = next(r for r in responses if r.status_code == 202)
    assert "Idempotent-Replayed" not in first.headers
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in responses if r.status_code == 200)
    expected = {field: first.json()[field] for field in STABLE_FIELDS}
    assert expected["request_id"] == key and expected["payload"] == body["payload"]
    for response in responses:
        assert {field: response.json()[field] for field in STABLE_FIELDS} == expected
    # every replay was counted exactly once, and each answer saw its own count
    assert sorted(r.json()["replay_count"] for r in responses) == list(range(n))

    rows = rows_for(session_factory, key)
    assert len(rows) == 1 and rows[0].replay_count == n - 1
    with session_factory() as db:
        assert db.execute(select(func.count()).select_from(FcmDispatch)).scalar_one() == 1
    until(lambda: rows_for(session_factory, key)[0].fcm_status == "sent")
    time.sleep(0.5)  # room for a second push, if one were coming
    assert fake_fcm.sent_request_ids() == [key]


def test_same_key_with_another_body_is_refused_even_when_concurrent(
    backend: str, server: Server, session_factory: sessionmaker[Session], fake_fcm: FakeFcm
) -> None:
    n = CONCURRENCY[backend]
    key = f"mixed-{backend}"
    headers = server.admin | {"Idempotency-Key": key}
    bodies = [{"action": "ring", "payload": {"seconds": 1 + i % 2}} for i in range(n)]
    responses = fire(server.url, [("/v1/devices/dev_http/commands", headers, body) for body in bodies])

    assert_no_server_errors(responses, server)
    winner = next(r for r in responses if r.status_code == 202).json()["payload"]
    for body, response in zip(bodies, responses, strict=True):
        if body["payload"] == winner:
            assert response.status_code in (200, 202), response.text
            assert response.json()["payload"] == winner
        else:  # documented in docs/api.md: the same key with anything different is 422
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "idempotency_key_reused"
    assert Counter(r.status_code for r in responses)[202] == 1

    # one after the other: another device, another action, another payload, or no payload at all
    for path, body in [
        ("/v1/devices/dev_other/commands", {"action": "ring", "payload": winner}),
        ("/v1/devices/dev_http/commands", {"action": "lock", "payload": {"message": "7"}}),
        ("/v1/devices/dev_http/commands", {"action": "ring", "payload": {"seconds": 7}}),
        ("/v1/devices/dev_http/commands", {"action": "lock"}),
    ]:
        refused = httpx.post(server.url + path, headers=headers, json=body, timeout=30)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "idempotency_key_reused"

    rows = rows_for(session_factory, key)
    assert len(rows) == 1
    assert (rows[0].device_id, rows[0].action, rows[0].payload) == ("dev_http", "ring", winner)
    until(lambda: rows_for(session_factory, key)[0].fcm_status == "sent")
    time.sleep(0.5)
    assert fake_fcm.sent_request_ids() == [key]
    assert fake_fcm.messages[0].body["message"]["token"] == "fcm-dev-http"
