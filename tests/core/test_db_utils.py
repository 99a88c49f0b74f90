"""The persistence helpers on SQLite and PostgreSQL: idempotency, bucketing, cleanup, log lines."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import db_utils
from core.base.errors import InvalidArgument, NotFound
from core.base.settings import Settings
from core.base.validation import payload_hash
from core.models import ApkBuild, ApkDownloadEvent, DeviceHeartbeat, FcmDispatch
from core.storage.engine import make_engine, make_session_factory
from tests.support.databases import add_device, run_together

HASH = payload_hash({"volume": 3})
BEAT = {"status": "ok", "battery_pct": 80, "plugged": False, "network_type": "wifi", "agent_version": "1.2.3"}
LOG_LINE = re.compile(
    r"db_operation event=(?P<event>\w+) entity=(?P<entity>\w+) keys=(?P<keys>\{.*\}) latency_ms=(?P<ms>\d+\.\d)"
)


def _count(db: Session, model: type) -> int:
    return db.execute(select(func.count()).select_from(model)).scalar_one()


@pytest.fixture
def wide_factory(settings: Settings, engine):  # engine: it empties the tables afterwards
    wide = make_engine(settings.database_url, pool_size=50)
    yield make_session_factory(wide, settings)
    wide.dispose()


# ------------------------------------------------------------------------------------ dispatches


def test_dispatch_is_created_once(db: Session, device: str) -> None:
    first = db_utils.record_fcm_dispatch(
        db, request_id="cmd_1", device_id=device, action="ring", payload_hash=HASH, payload={"volume": 3}
    )
    assert first["created"] is True
    dispatch = first["dispatch"]
    assert dispatch["request_id"] == "cmd_1"
    assert dispatch["status"] == "pending" and dispatch["fcm_status"] == "pending"
    assert dispatch["payload"] == {"volume": 3}
    assert dispatch["created_at"].tzinfo is not None
    second = db_utils.record_fcm_dispatch(db, request_id="cmd_1", device_id=device, action="ring", payload_hash=HASH)
    assert second["created"] is False
    assert second["dispatch"]["id"] == dispatch["id"]
    assert second["dispatch"]["replay_count"] == 1
    assert _count(db, FcmDispatch) == 1


def test_duplicate_with_different_action_or_hash_returns_original(db: Session, device: str) -> None:
    original = db_utils.record_fcm_dispatch(db, request_id="cmd_x", device_id=device, action="ring", payload_hash=HASH)
    other_hash = payload_hash({"volume": 9})
    for action, digest in (("lock", HASH), ("ring", other_hash), ("reboot", other_hash)):
        again = db_utils.record_fcm_dispatch(
            db, request_id="cmd_x", device_id=device, action=action, payload_hash=digest, payload={"volume": 9}
        )
        assert again["created"] is False
        assert again["dispatch"]["action"] == "ring"
        assert again["dispatch"]["payload_hash"] == HASH
        assert again["dispatch"]["payload"] is None
        assert again["dispatch"]["created_at"] == original["dispatch"]["created_at"]
    stored = db.execute(select(FcmDispatch)).scalar_one()
    assert (stored.action, stored.payload_hash, stored.replay_count) == ("ring", HASH, 3)


def test_50_concurrent_dispatches_make_one_row(wide_factory: sessionmaker[Session], device: str) -> None:
    def dispatch(_: int) -> dict:
        with wide_factory.begin() as session:
            return db_utils.record_fcm_dispatch(
                session, request_id="cmd_race", device_id=device, action="sync", payload_hash=HASH
            )

    results = run_together(50, dispatch)
    assert sum(r["created"] for r in results) == 1
    ids = {r["dispatch"]["id"] for r in results}
    created_at = {r["dispatch"]["created_at"] for r in results}
    assert len(ids) == 1 and len(created_at) == 1
    with wide_factory() as session:
        assert _count(session, FcmDispatch) == 1
        assert session.execute(select(FcmDispatch.replay_count)).scalar_one() == 49


def test_dispatch_for_unknown_device_is_not_found(db: Session) -> None:
    with pytest.raises(NotFound, match="nobody"):
        db_utils.record_fcm_dispatch(db, request_id="cmd_1", device_id="nobody", action="ring", payload_hash=HASH)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"request_id": "has space"}, "request_id"),
        ({"request_id": "x" * 256}, "request_id"),
        ({"device_id": ""}, "device_id"),
        ({"device_id": "dev/1"}, "device_id"),
        ({"action": ""}, "action"),
        ({"action": "Ring!"}, "action"),
        ({"payload_hash": ""}, "payload_hash"),
        ({"payload_hash": "x" * 129}, "payload_hash"),
        ({"payload_hash": "has space"}, "payload_hash"),
        ({"payload_hash": "abc\n"}, "payload_hash"),
        ({"payload_hash": "sha256:ünïcode"}, "payload_hash"),
        ({"payload_hash": 123}, "payload_hash"),
        ({"fcm_status": "delivered"}, "fcm_status"),
        ({"payload": [1, 2]}, "payload"),
        ({"payload": {"blob": "x" * 5000}}, "payload"),
    ],
)
def test_bad_dispatch_arguments_raise_before_writing(db: Session, device: str, kwargs: dict, field: str) -> None:
    args = {"request_id": "cmd_ok", "device_id": device, "action": "ring", "payload_hash": HASH} | kwargs
    with pytest.raises(InvalidArgument) as info:
        db_utils.record_fcm_dispatch(db, **args)
    assert info.value.field == field
    assert _count(db, FcmDispatch) == 0


@pytest.mark.parametrize(
    "digest",
    ["abc123", "x" * 128, "sha256:" + HASH, "b64+/AZaz09==", "v1.2_3-4"],
    ids=["seed-example", "128-chars", "prefixed", "base64", "punctuation"],
)
def test_the_helper_takes_any_digest_the_contract_allows(db: Session, device: str, digest: str) -> None:
    """The contract: 1-128 characters from A-Z a-z 0-9 . _ : - + / = (the seed passes "abc123")."""
    first = db_utils.record_fcm_dispatch(
        db, request_id="cmd_d", device_id=device, action="ping", payload_hash=digest, fcm_status="pending"
    )
    assert first["created"] is True and first["dispatch"]["payload_hash"] == digest
    db.commit()
    again = db_utils.record_fcm_dispatch(db, request_id="cmd_d", device_id=device, action="ping", payload_hash=digest)
    assert again["created"] is False and again["dispatch"]["payload_hash"] == digest


# ------------------------------------------------------------------------------------ heartbeats


def test_heartbeat_bucket_boundaries(db: Session, device: str) -> None:
    start = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    a = db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data=BEAT, received_at=start)
    b = db_utils.record_heartbeat_with_bucketing(
        db, device_id=device, heartbeat_data=BEAT, received_at=start + timedelta(seconds=9.999)
    )
    c = db_utils.record_heartbeat_with_bucketing(
        db, device_id=device, heartbeat_data=BEAT, received_at=start + timedelta(seconds=10)
    )
    assert (a["created"], b["created"], c["created"]) == (True, False, True)
    assert a["bucket_start"] == b["bucket_start"] == start
    assert c["bucket_start"] == start + timedelta(seconds=10)
    assert b["heartbeat"]["received_at"] == start  # the stored row, not the duplicate
    assert _count(db, DeviceHeartbeat) == 2


def test_heartbeat_stores_fields_and_ignores_unknown_keys(db: Session, device: str) -> None:
    moment = datetime(2026, 1, 1, 0, 0, 7, 123456, tzinfo=UTC)
    result = db_utils.record_heartbeat_with_bucketing(
        db, device_id=device, heartbeat_data=BEAT | {"rogue": 1, "device_id": "other"}, received_at=moment
    )
    beat = result["heartbeat"]
    assert beat["device_id"] == device
    assert beat["received_at"] == moment and beat["received_at"].tzinfo is not None
    assert beat["bucket_start"] == datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert {k: beat[k] for k in BEAT} == BEAT
    assert "rogue" not in beat


def test_a_new_heartbeat_is_returned_as_the_database_then_reads_it(db: Session, device: str) -> None:
    """The helper returns the stored row without reading it back: the answer of a new beat and of its
    duplicate (which does read the row) are the same, key for key and in the columns' order."""
    moment = datetime.now(UTC).replace(microsecond=654321).astimezone(timezone(timedelta(hours=-5)))
    data = {"status": "ok", "battery_pct": 0, "plugged": False, "network_type": "none", "agent_version": None}
    first = db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data=data, received_at=moment)
    again = db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data=data, received_at=moment)
    assert (first["created"], again["created"]) == (True, False)
    assert list(first["heartbeat"].items()) == list(again["heartbeat"].items())
    assert list(first["heartbeat"]) == [c.name for c in DeviceHeartbeat.__table__.columns]
    assert first["heartbeat"]["received_at"].utcoffset() == timedelta(0)


def test_bucket_follows_configured_width(db: Session, device: str) -> None:
    moment = datetime(2026, 1, 1, 0, 0, 59, tzinfo=UTC)
    result = db_utils.record_heartbeat_with_bucketing(
        db, device_id=device, heartbeat_data={}, bucket_seconds=60, received_at=moment
    )
    assert result["bucket_start"] == datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)


def test_other_timezones_land_in_the_same_bucket(db: Session, device: str) -> None:
    utc = datetime(2026, 6, 1, 10, 0, 1, tzinfo=UTC)
    plus2 = utc.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin")) + timedelta(seconds=2)
    first = db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data={}, received_at=utc)
    second = db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data={}, received_at=plus2)
    assert first["created"] and not second["created"]
    assert second["bucket_start"].utcoffset() == timedelta(0)


def test_50_concurrent_heartbeats_make_one_row(wide_factory: sessionmaker[Session], device: str) -> None:
    moment = datetime(2026, 11, 28, 12, 0, 3, tzinfo=UTC)

    def beat(_: int) -> dict:
        with wide_factory.begin() as session:
            return db_utils.record_heartbeat_with_bucketing(
                session, device_id=device, heartbeat_data=BEAT, received_at=moment
            )

    results = run_together(50, beat)
    assert sum(r["created"] for r in results) == 1
    assert {r["bucket_start"] for r in results} == {datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)}
    with wide_factory() as session:
        assert _count(session, DeviceHeartbeat) == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"battery_pct": -1}, "battery_pct"),
        ({"battery_pct": 101}, "battery_pct"),
        ({"battery_pct": True}, "battery_pct"),
        ({"battery_pct": "50"}, "battery_pct"),
        ({"plugged": "yes"}, "plugged"),
        ({"network_type": "5g"}, "network_type"),
        ({"status": "OK now"}, "status"),
        ({"agent_version": "1.0\x00"}, "agent_version"),
        ({"agent_version": "v" * 65}, "agent_version"),
    ],
)
def test_bad_heartbeats_raise_before_writing(db: Session, device: str, data: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data=data)
    assert info.value.field == field
    assert _count(db, DeviceHeartbeat) == 0


def test_heartbeat_rejects_naive_time_and_empty_id(db: Session, device: str) -> None:
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        db_utils.record_heartbeat_with_bucketing(
            db,
            device_id=device,
            heartbeat_data={},
            received_at=datetime(2026, 1, 1),
        )
    with pytest.raises(InvalidArgument, match="device_id"):
        db_utils.record_heartbeat_with_bucketing(db, device_id="", heartbeat_data={})


def test_heartbeat_for_unknown_device_is_not_found(db: Session) -> None:
    with pytest.raises(NotFound):
        db_utils.record_heartbeat_with_bucketing(db, device_id="ghost", heartbeat_data={})


# ------------------------------------------------------------------------------------- downloads


def _build(db: Session) -> int:
    build = ApkBuild(version_code=1, version_name="1.0", filename="a.apk", size_bytes=10, sha256="0" * 64)
    db.add(build)
    db.flush()
    return build.id


def test_every_download_is_an_event(db: Session) -> None:
    build_id = _build(db)
    one = db_utils.record_apk_download(db, build_id=build_id, source="enrollment", token_id="enr_1", ip="10.0.0.1")
    two = db_utils.record_apk_download(db, build_id=build_id, source="update", ip="::1")
    assert one["download"]["id"] != two["download"]["id"]
    assert one["download"]["source"] == "enrollment" and one["download"]["ip"] == "10.0.0.1"
    assert _count(db, ApkDownloadEvent) == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"source": "browser"}, "source"), ({"ip": "not-an-ip"}, "ip"), ({"build_id": 0}, "build_id")],
)
def test_bad_downloads_raise_before_writing(db: Session, kwargs: dict, field: str) -> None:
    args = {"build_id": _build(db), "source": "manual"} | kwargs
    with pytest.raises(InvalidArgument) as info:
        db_utils.record_apk_download(db, **args)
    assert info.value.field == field
    assert _count(db, ApkDownloadEvent) == 0


def test_download_of_unknown_build_is_not_found(db: Session) -> None:
    with pytest.raises(NotFound):
        db_utils.record_apk_download(db, build_id=999, source="manual")


# -------------------------------------------------------------------------------------- cleanups


def _seed_for_cleanup(session_factory: sessionmaker[Session]) -> datetime:
    """Heartbeats, dispatches and downloads on both sides of a 30-day cutoff."""
    now = datetime.now(UTC)
    add_device(session_factory, "dev_a")
    add_device(session_factory, "dev_b")
    with session_factory.begin() as db:
        for days in (45, 31, 30.01, 29.99, 1, 0):
            for dev in ("dev_a", "dev_b"):
                db_utils.record_heartbeat_with_bucketing(
                    db, device_id=dev, heartbeat_data={}, received_at=now - timedelta(days=days)
                )
        build = ApkBuild(version_code=7, version_name="7", filename="b.apk", size_bytes=1, sha256="1" * 64)
        db.add(build)
        db.flush()
        for i, (days, status) in enumerate(
            [(40, "acked"), (40, "pending"), (40, "failed"), (40, "expired"), (5, "acked")]
        ):
            db.add(
                FcmDispatch(
                    request_id=f"r{i}",
                    device_id="dev_a",
                    action="ping",
                    payload_hash=HASH,
                    status=status,
                    created_at=now - timedelta(days=days),
                )
            )
            db.add(ApkDownloadEvent(build_id=build.id, source="manual", created_at=now - timedelta(days=days)))
    return now


def test_cleanup_deletes_exactly_rows_before_cutoff(session_factory: sessionmaker[Session]) -> None:
    _seed_for_cleanup(session_factory)
    with session_factory() as db:
        result = db_utils.cleanup_old_heartbeats(db, retention_days=30)
        assert result["entity"] == "device_heartbeats" and result["deleted"] == 6
        assert set(result) == {"entity", "cutoff", "deleted", "latency_ms"}
        remaining = db.execute(select(DeviceHeartbeat.bucket_start)).scalars().all()
        assert len(remaining) == 6
        assert all(ts >= result["cutoff"] for ts in remaining)
        assert db_utils.cleanup_old_heartbeats(db, retention_days=30)["deleted"] == 0


def test_dry_run_counts_what_a_real_run_then_deletes(session_factory: sessionmaker[Session]) -> None:
    _seed_for_cleanup(session_factory)
    overrides = {"device_heartbeats": 30, "fcm_dispatches": 30, "apk_download_events": 30}
    with session_factory() as db:
        dry = db_utils.run_all_retention_cleanups(db, dry_run=True, retention_days=overrides)
        assert _count(db, DeviceHeartbeat) == 12 and _count(db, FcmDispatch) == 5
        assert _count(db, ApkDownloadEvent) == 5
        real = db_utils.run_all_retention_cleanups(db, retention_days=overrides)
    assert {e: r["would_delete"] for e, r in dry.items()} == {e: r["deleted"] for e, r in real.items()}
    # pending dispatches are never deleted, whatever their age
    assert real["fcm_dispatches"]["deleted"] == 3
    assert real["apk_download_events"]["deleted"] == 4
    with session_factory() as db:
        statuses = sorted(db.execute(select(FcmDispatch.status)).scalars())
        assert statuses == ["acked", "pending"]


def test_cleanup_walks_in_small_batches(session_factory: sessionmaker[Session], settings: Settings) -> None:
    add_device(session_factory, "dev_a")
    start = datetime.now(UTC) - timedelta(days=90)
    with session_factory.begin() as db:
        for i in range(57):
            db_utils.record_heartbeat_with_bucketing(
                db, device_id="dev_a", heartbeat_data={}, received_at=start + timedelta(seconds=10 * i)
            )
    small = make_session_factory(session_factory.kw["bind"], settings.with_overrides(cleanup_batch_size=5))
    with small() as db:
        assert db_utils.cleanup_old_heartbeats(db, retention_days=30)["deleted"] == 57
        assert _count(db, DeviceHeartbeat) == 0


def test_cleanup_uses_configured_retention(session_factory: sessionmaker[Session], settings: Settings) -> None:
    _seed_for_cleanup(session_factory)
    short = make_session_factory(session_factory.kw["bind"], settings.with_overrides(heartbeat_retention_days=2))
    with short() as db:
        assert db_utils.cleanup_old_heartbeats(db, dry_run=True)["would_delete"] == 8


def test_cleanup_rejects_bad_overrides_before_deleting(session_factory: sessionmaker[Session]) -> None:
    _seed_for_cleanup(session_factory)
    with session_factory() as db:
        with pytest.raises(InvalidArgument, match="unknown cleanup entity"):
            db_utils.run_all_retention_cleanups(db, retention_days={"heartbeats": 1})
        with pytest.raises(InvalidArgument):
            db_utils.run_all_retention_cleanups(db, retention_days={"device_heartbeats": 0, "fcm_dispatches": -1})
        assert _count(db, DeviceHeartbeat) == 12


# ------------------------------------------------------------------------------------- log lines


def test_log_lines_follow_the_contract(db: Session, device: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nexmdm.db")
    db_utils.record_fcm_dispatch(db, request_id="cmd_123", device_id=device, action="ring", payload_hash=HASH)
    db_utils.record_fcm_dispatch(db, request_id="cmd_123", device_id=device, action="ring", payload_hash=HASH)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data={}, received_at=moment)
    db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data={}, received_at=moment)
    db.commit()
    db_utils.cleanup_old_heartbeats(db, retention_days=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "nexmdm.db"]
    parsed = [LOG_LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    assert [(m["event"], m["entity"], m["keys"]) for m in parsed] == [
        ("create", "fcm_dispatches", "{'request_id': 'cmd_123'}"),
        ("idempotency_hit", "fcm_dispatches", "{'request_id': 'cmd_123'}"),
        ("create", "device_heartbeats", f"{{'device_id': '{device}'}}"),
        ("dedup_hit", "device_heartbeats", f"{{'device_id': '{device}'}}"),
        ("cleanup", "device_heartbeats", "{'deleted': 1}"),
    ]
    assert all(float(m["ms"]) >= 0 for m in parsed)


def test_slow_heartbeat_logs_a_warning(
    session_factory: sessionmaker[Session], settings: Settings, device: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nexmdm.db")
    strict = make_session_factory(session_factory.kw["bind"], settings.with_overrides(slow_heartbeat_ms=0.0))
    relaxed = make_session_factory(session_factory.kw["bind"], settings.with_overrides(slow_heartbeat_ms=60_000.0))
    with strict() as db:
        db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data={})
    with relaxed() as db:
        db_utils.record_heartbeat_with_bucketing(db, device_id=device, heartbeat_data={})
    levels = [r.levelno for r in caplog.records if r.name == "nexmdm.db"]
    assert levels == [logging.WARNING, logging.INFO]


def test_the_validated_heartbeat_fields_are_the_stored_ones() -> None:
    # every insert path builds its columns from STORED_FIELDS; the validation must return exactly those
    from core.heartbeats.validate import STORED_FIELDS, validate_heartbeat_data

    assert list(validate_heartbeat_data({})) == list(STORED_FIELDS)
