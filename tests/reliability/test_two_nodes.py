"""Two nodes: two ``nexmdm serve`` processes (2 workers each, different ports and disks) sharing one
PostgreSQL through PgBouncer (transaction mode) and one Redis, with a fake FCM on loopback.

* an APK uploaded on A downloads byte-identical from B, resumed with Range and If-Range;
* 25 failed logins spread over both nodes: the configured 20 are 401, the rest 429;
* commands created on A are pushed exactly once with delivery workers on both nodes;
* a cleanup started on each node at once runs once;
* killing node A (SIGKILL, the whole process group) under heartbeat load loses no acknowledged beat, and B
  keeps answering.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from core.access import keys as admin_keys
from core.base import security
from core.base.settings import Settings
from core.storage.engine import make_session_factory
from nexmdm_cli.commands.demo import free_port, wait_until_ready
from tests.support.cli import seed_dispatch
from tests.support.databases import DatabaseFactory, migrate
from tests.support.fakes.apk import apk_bytes
from tests.support.fakes.fcm import FakeFcm, write_service_account
from tests.support.pgbouncer import PgBouncer
from tests.support.redis_server import shared_prefix

APK = apk_bytes(os.urandom(1_500_000))
OLD_DISPATCHES = 6


@dataclass
class Node:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)  # the database is dropped next: a graceful stop is not under test
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    a: Node
    b: Node
    env: dict[str, str]
    direct_url: str
    admin: dict[str, str]
    device_tokens: dict[str, str]
    fake: FakeFcm


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("two-nodes")
    databases = DatabaseFactory(tmp)
    direct = databases.create("postgresql")
    migrate(direct)
    bouncer = PgBouncer(direct, pool_size=10).start()
    redis_prefix = shared_prefix()
    redis_url, prefix = next(redis_prefix)
    fake = FakeFcm().start()
    engine = create_engine(direct)
    factory = make_session_factory(engine, Settings(database_url=direct))
    with factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="ops")
    tokens = {f"dev_{i:02d}": security.new_secret(security.DEVICE_PREFIX) for i in range(40)}
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO devices (id, device_token_hash, fcm_token, enrolled_at) VALUES (:id, :h, :f, now())"),
            [{"id": d, "h": security.hash_secret(t), "f": f"fcm-{d}"} for d, t in tokens.items()],
        )
    for i in range(OLD_DISPATCHES):  # finished long ago: the cleanup's work, one per batch
        seed_dispatch(factory, f"old-{i}", "dev_00", ago=timedelta(days=400), status="acked")
    engine.dispose()
    key = write_service_account(tmp / "sa.json", f"{fake.url}/token")
    env = os.environ | {
        "NEXMDM_DATABASE_URL": bouncer.url,
        "NEXMDM_DATABASE_POOL_MODE": "transaction",
        "NEXMDM_REDIS_URL": redis_url,
        "NEXMDM_REDIS_KEY_PREFIX": prefix,
        "NEXMDM_FCM_CREDENTIALS": str(key),
        "NEXMDM_FCM_ENDPOINT": fake.url,
        "NEXMDM_DELIVERY_POLL_SECONDS": "0.05",
        "NEXMDM_AUTH_FAILURE_LIMIT": "20",
        "NEXMDM_HEARTBEAT_BUCKET_SECONDS": "1",
        "NEXMDM_HEARTBEAT_RATE_PER_MINUTE": "100000",
        "NEXMDM_HEARTBEAT_BURST": "1000",
        "NEXMDM_DB_POOL_SIZE": "4",
        "NEXMDM_CLEANUP_BATCH_SIZE": "1",
        "NEXMDM_CLEANUP_BATCH_PAUSE_MS": "600",
    }
    nodes = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp / f"node-{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", "from nexmdm_cli.main import run; run()", "serve", "--port", str(port)]
                    + ["--workers", "2"],
                    env=env
                    | {
                        "NEXMDM_DATA_DIR": str(tmp / f"data-{name}"),
                        # a folder the test removes, even when the node is killed before it cleans up
                        "PROMETHEUS_MULTIPROC_DIR": str(_mkdir(tmp / f"metrics-{name}")),
                    },
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killing the node kills its workers
                )
            nodes.append(Node(name, f"http://127.0.0.1:{port}", proc, log))
        for node in nodes:
            wait_until_ready(node.url, node.proc, timeout=90)
        yield Cluster(nodes[0], nodes[1], env, direct, {"Authorization": f"Bearer {secret}"}, tokens, fake)
    finally:
        for node in nodes:
            node.stop()
        fake.stop()
        bouncer.stop()
        next(redis_prefix, None)
        databases.drop_all()


def test_apk_uploaded_on_a_downloads_from_b(cluster: Cluster) -> None:
    uploaded = httpx.post(
        f"{cluster.a.url}/v1/apk/builds",
        files={"file": ("agent.apk", APK)},
        data={"version_code": "100", "version_name": "1.0.0"},
        headers=cluster.admin,
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    sha = hashlib.sha256(APK).hexdigest()
    url = f"{cluster.b.url}/v1/apk/download/latest"
    head = httpx.get(url, headers=cluster.admin | {"Range": "bytes=0-499999"}, timeout=30)
    assert head.status_code == 206 and head.headers["etag"] == f'"{sha}"'
    tail = httpx.get(url, headers=cluster.admin | {"Range": "bytes=500000-", "If-Range": f'"{sha}"'}, timeout=30)
    assert tail.status_code == 206
    assert head.content + tail.content == APK


def test_failed_logins_are_limited_across_both_nodes(cluster: Cluster) -> None:
    bad = {"Authorization": "Bearer nxa_" + "z" * 43}
    codes = [httpx.get(f"{(cluster.a, cluster.b)[i % 2].url}/v1/devices", headers=bad).status_code for i in range(25)]
    assert codes == [401] * 20 + [429] * 5


def test_commands_created_on_a_are_pushed_exactly_once(cluster: Cluster) -> None:
    fake = cluster.fake
    ids = [f"two-{i}" for i in range(20)]
    for i, request_id in enumerate(ids):
        created = httpx.post(
            f"{cluster.a.url}/v1/devices/dev_{i:02d}/commands",
            json={"action": "ping"},
            headers=cluster.admin | {"Idempotency-Key": request_id},
        )
        assert created.status_code == 202, created.text
    deadline = time.monotonic() + 30
    while len(set(fake.sent_request_ids()) & set(ids)) < len(ids):
        assert time.monotonic() < deadline, "not every command was pushed"
        time.sleep(0.1)
    time.sleep(1.0)  # time for a duplicate to show up, were there one
    sent = [r for r in fake.sent_request_ids() if r in ids]
    assert sorted(sent) == sorted(ids)  # each exactly once, though four delivery workers were claiming


def test_a_cleanup_started_on_each_node_at_once_runs_once(cluster: Cluster) -> None:
    def start(node: Node) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", "from nexmdm_cli.main import run; run()", "cleanup", "--json"],
            env=cluster.env | {"NEXMDM_DATA_DIR": str(node.log.parent / f"data-{node.name}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    runs = [start(cluster.a), start(cluster.b)]
    outcomes = [(run.wait(timeout=120), run.stdout.read(), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 75], outcomes
    (winner,) = [json.loads(out) for code, out, _ in outcomes if code == 0]
    assert winner["results"]["fcm_dispatches"]["deleted"] == OLD_DISPATCHES
    (loser,) = [err for code, _, err in outcomes if code == 75]
    assert "another cleanup holds the lock" in loser


def test_killing_a_under_heartbeat_load_loses_no_acknowledged_beat(cluster: Cluster) -> None:
    acked: list[tuple[str, str]] = []
    acked_by_a: list[int] = []
    after_kill: list[int] = []
    killed_at: list[float] = []
    stop = threading.Event()
    lock = threading.Lock()
    devices = sorted(cluster.device_tokens)

    def load(worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            i = worker
            while not stop.is_set():
                device = devices[i % len(devices)]
                node = (cluster.a, cluster.b)[i % 2]
                i += 7
                try:
                    answer = client.post(
                        f"{node.url}/v1/heartbeat",
                        json={"status": "ok", "battery_pct": 50},
                        headers={"Authorization": f"Bearer {cluster.device_tokens[device]}"},
                    )
                except httpx.HTTPError:
                    continue  # A is gone: not acknowledged, nothing promised
                with lock:
                    if answer.status_code in (200, 201):
                        acked.append((device, answer.json()["bucket_start"]))
                        if node is cluster.a:
                            acked_by_a.append(1)
                    if killed_at and node is cluster.b:
                        after_kill.append(answer.status_code)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    cluster.a.kill()
    killed_at.append(time.monotonic())
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert len(acked) > 20 and acked_by_a  # A acknowledged beats before it died: they must all be stored
    assert after_kill and all(code in (200, 201) for code in after_kill), after_kill[:20]  # B keeps answering
    engine = create_engine(cluster.direct_url)
    with engine.connect() as conn:
        stored = {
            (device, bucket.isoformat())
            for device, bucket in conn.execute(text("SELECT device_id, bucket_start FROM device_heartbeats"))
        }
    engine.dispose()
    lost = {(d, datetime.fromisoformat(b).isoformat()) for d, b in acked} - stored
    assert not lost, sorted(lost)[:10]
