"""The hostile input catalogue (issue #7, item 5), on SQLite and PostgreSQL.

One ``pytest.param`` per input. Each case states the answer documented in ``docs/api.md`` (status, problem
``code`` and a part of its ``detail``) and the rows it may write; the test checks the answer, that every
error is ``application/problem+json`` with ``type``/``title``/``status`` right, and that the database is
exactly as before (every row of every table) unless the case says what it writes.

A module-scoped "world" per backend (its own database and app) keeps the run short: two devices, a
command each, an APK build. Cases that are accepted (ignored fields, ranges) act for a device or a command
made for that case (``@me@``, ``@cmd@``, ``@new@`` in a path or body), so they do not depend on order.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.settings import Settings
from core.enrollment import tokens as credentials
from core.models import Base, Device, DeviceHeartbeat, FcmDispatch
from core.storage.engine import make_engine, make_session_factory
from nexmdm_api import create_app
from nexmdm_api.jsonbody import MAX_DEPTH
from tests.support.databases import BACKENDS, DatabaseFactory, migrate

PROBLEM = "application/problem+json"
MB = 1024 * 1024
KB10 = 10 * 1024
BIDI = "\u202e"  # RIGHT-TO-LEFT OVERRIDE


# ------------------------------------------------------------------------------------------- world


@dataclass
class World:
    client: TestClient[Any]
    sessions: sessionmaker[Session]
    engine: Engine
    enrollment: str
    admin: str
    device: str  # dev_001's token
    other: str  # dev_002's token
    apk_size: int
    counter: int = 0

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def fresh_device(self) -> tuple[str, str]:
        """A newly enrolled device of its own: ``(device_id, token)``."""
        device_id = self.new_id()
        response = self.client.post("/v1/enroll", json={"device_id": device_id}, headers=self.bearer(self.enrollment))
        assert response.status_code == 201, response.text
        return device_id, response.json()["device_token"]

    def new_id(self) -> str:
        self.counter += 1
        return f"case-{self.counter:03d}-{uuid.uuid4().hex[:6]}"

    def command_for(self, device_id: str) -> str:
        key = self.new_id()
        response = self.client.post(
            f"/v1/devices/{device_id}/commands",
            json={"action": "ping"},
            headers=self.bearer(self.admin) | {"Idempotency-Key": key},
        )
        assert response.status_code == 202, response.text
        return key


def _zip(entries: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _apk_bytes() -> bytes:
    return _zip({"AndroidManifest.xml": "<manifest/>" * 200, "classes.dex": bytes(range(256)) * 8})


BOUNDARY = "hostile-boundary"
FORM = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def _form(content: bytes, *, name: str = "9.9.9", extra: bytes | None = None) -> bytes:
    """A multipart upload body (version code 999) with the given file content and version name."""
    parts = [
        (b'name="file"; filename="agent.apk"', content),
        (b'name="version_code"', b"999"),
        (b'name="version_name"', name.encode()),
        *([(b'name="' + extra + b'"', b"1")] if extra else []),
    ]
    body = b"".join(
        b"--"
        + BOUNDARY.encode()
        + b"\r\nContent-Disposition: form-data; "
        + disposition
        + b"\r\n\r\n"
        + value
        + b"\r\n"
        for disposition, value in parts
    )
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


def _relative_download_url(response: Any) -> None:
    url = response.json()["download_url"]
    assert url.startswith("/v1/apk/download/") and "evil" not in url, url


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    url = databases.create(request.param)
    migrate(url)
    tmp: Path = tmp_path_factory.mktemp(f"hostile-{request.param}")
    # many accepted heartbeats from one address in a few seconds: the limiters are not what is tested here
    settings = Settings(
        database_url=url,
        data_dir=tmp / "data",
        heartbeat_rate_per_minute=100_000,
        heartbeat_burst=10_000,
        actions=("echo",),  # an operator's own action: untyped, so a deep payload is accepted when it parses
    )
    engine = make_engine(url)
    sessions = make_session_factory(engine, settings)
    with sessions.begin() as db:
        enrollment, _ = credentials.create_enrollment_token(db, uses=10_000)
        admin, _ = admin_keys.create_admin_key(db, name="ops")
    with TestClient(create_app(settings)) as client:
        tokens = []
        for device_id in ("dev_001", "dev_002"):
            response = client.post(
                "/v1/enroll", json={"device_id": device_id}, headers={"Authorization": f"Bearer {enrollment}"}
            )
            assert response.status_code == 201, response.text
            tokens.append(response.json()["device_token"])
        world = World(client, sessions, engine, enrollment, admin, tokens[0], tokens[1], apk_size=0)
        for device_id, key in (("dev_001", "cmd-mine"), ("dev_002", "cmd-other")):
            response = client.post(
                f"/v1/devices/{device_id}/commands",
                json={"action": "ring", "payload": {"seconds": 5}},
                headers=world.bearer(admin) | {"Idempotency-Key": key},
            )
            assert response.status_code == 202, response.text
        apk = _apk_bytes()
        response = client.post(
            "/v1/apk/builds",
            files={"file": ("agent.apk", apk, "application/vnd.android.package-archive")},
            data={"version_code": "7", "version_name": "0.7.0"},
            headers=world.bearer(admin),
        )
        assert response.status_code == 201, response.text
        world.apk_size = len(apk)
        # the admin key's download session of the build starts here: the Range cases below are within it, so
        # they write no audit event whatever their range (one event per credential and build per session)
        assert client.get("/v1/apk/download/latest", headers=world.bearer(admin)).status_code == 200
        for token in tokens:  # a device that has used its token cannot be "re-enrolled" by a retry
            assert (
                client.post("/v1/heartbeat", json={"battery_pct": 50}, headers=world.bearer(token)).status_code == 201
            )
        yield world
    engine.dispose()


#: written by the server's own maintenance loop on its schedule (the leader's lease), not by requests
BACKGROUND_TABLES = {"leases", "presence_sweeps", "device_presence"}  # the leader's presence sweep writes the last two
#: columns the maintenance loop's sweeps write on their own schedule: the profile sweep clears the mark of a
#: device enrolled (or relabelled) just before, which can fall between a case's two snapshots
BACKGROUND_COLUMNS = {"devices": {"profile_stale"}}


def snapshot(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table, as text: what "nothing was written" is checked against."""
    rows: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in BACKGROUND_TABLES:
                continue
            skipped = BACKGROUND_COLUMNS.get(table.name, set())
            columns = [column for column in table.columns if column.name not in skipped]
            rows[table.name] = sorted(repr(tuple(row)) for row in conn.execute(select(*columns)))
    return rows


def counts(snap: dict[str, list[str]]) -> dict[str, int]:
    return {name: len(rows) for name, rows in snap.items()}


# ------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One hostile request and its documented answer.

    ``who``: ``device`` (dev_001), ``fresh`` (a device enrolled for this case, ``@me@``), ``admin``,
    ``enrollment``. ``json`` is sent with ``Content-Type: application/json``; ``raw`` as is (with that
    content type unless ``headers`` says otherwise). ``code`` is the problem's ``code`` (None: a success).
    ``writes`` counts the new rows per table; ``check`` asserts more (mass assignment not applied...).
    """

    method: str
    path: str
    who: str
    status: int
    code: str | None = None
    detail: str = ""
    json: Any = None
    raw: bytes | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)
    check: Callable[[Context, Any], None] | None = None


@dataclass
class Context:
    world: World
    me: str
    cmd: str
    new: str
    started: datetime


def close_to_now(value: datetime | None, ctx: Context) -> bool:
    return value is not None and ctx.started - timedelta(seconds=60) <= value <= datetime.now(UTC) + timedelta(
        seconds=5
    )


def heartbeat_ignored_fields(ctx: Context, response: Any) -> None:
    """Timestamps and ids in a heartbeat body are ignored: the server's clock and the token's device count."""
    bucket = datetime.fromisoformat(response.json()["bucket_start"])
    assert close_to_now(bucket, ctx), bucket
    with ctx.world.sessions() as db:
        device = db.get(Device, ctx.me)
        assert device is not None and close_to_now(device.last_seen_at, ctx), device.last_seen_at
        beats = db.execute(select(DeviceHeartbeat).where(DeviceHeartbeat.device_id == ctx.me)).scalars().all()
        assert len(beats) == 1 and close_to_now(beats[0].received_at, ctx)
        other = db.get(Device, "dev_002")
        assert other is not None and other.revoked_at is None


def enroll_ignored_fields(ctx: Context, response: Any) -> None:
    """Mass assignment on enroll: only the documented fields are taken; dev_002 is untouched."""
    assert response.json()["device_id"] == ctx.new
    with ctx.world.sessions() as db:
        device = db.get(Device, ctx.new)
        assert device is not None
        assert device.last_seen_at is None and device.revoked_at is None and device.fcm_token_dead_at is None
        assert close_to_now(device.enrolled_at, ctx)
        assert device.device_token_hash != "0" * 64
        assert db.get(Device, "999") is None
    # dev_002 still answers to its own token
    other = ctx.world.client.post("/v1/heartbeat", json={}, headers=ctx.world.bearer(ctx.world.other))
    assert other.status_code in (200, 201), other.text


def ack_ignored_fields(ctx: Context, response: Any) -> None:
    assert response.json()["device_id"] == ctx.me
    with ctx.world.sessions() as db:
        dispatch = db.execute(select(FcmDispatch).where(FcmDispatch.request_id == ctx.cmd)).scalar_one()
        assert dispatch.device_id == ctx.me and dispatch.status == "acked"
        assert close_to_now(dispatch.acked_at, ctx), dispatch.acked_at
        other = db.execute(select(FcmDispatch).where(FcmDispatch.request_id == "cmd-other")).scalar_one()
        assert other.status == "pending" and other.acked_at is None


def key_not_stored(fragment: str) -> Callable[[Context, Any], None]:
    """An unknown key (or its value) is ignored: no text column of any table holds it."""

    def check(ctx: Context, response: Any) -> None:
        snap = snapshot(ctx.world.engine)
        assert not any(fragment in row for rows in snap.values() for row in rows)

    return check


def whole_file(ctx: Context, response: Any) -> None:
    assert len(response.content) == ctx.world.apk_size
    assert "content-range" not in response.headers


def clipped_to_file(ctx: Context, response: Any) -> None:
    size = ctx.world.apk_size
    assert response.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert len(response.content) == size


def unsatisfiable(ctx: Context, response: Any) -> None:
    assert response.headers["content-range"] == f"bytes */{ctx.world.apk_size}"


def nested(depth: int, leaf: str = "1") -> str:
    """A JSON object nested ``depth`` levels deep."""
    return '{"a":' * depth + leaf + "}" * depth


HB = "/v1/heartbeat"
ENROLL = "/v1/enroll"
CMD = "/v1/devices/dev_001/commands"
ACK = "/v1/commands/@cmd@/ack"
DOWNLOAD = "/v1/apk/download/latest"
KEY = {"Idempotency-Key": "@new@"}
ENROLLED = {"devices": 1}
BEAT = {"device_heartbeats": 1}
DOWNLOADED: dict[str, int] = {}  # within the admin key's download session (see the world fixture)


def case(case_id: str, *args: Any, **kwargs: Any) -> Any:
    return pytest.param(Case(*args, **kwargs), id=case_id)


# fmt: off
CASES = [
    # ---- malformed JSON
    case("truncated-json", "POST", HB, "device", 400, "bad_request", "truncated", raw=b'{"status": '),
    case("trailing-garbage", "POST", HB, "device", 400, "bad_request", "trailing characters", raw=b"{} {}"),
    case("nan-literal", "POST", HB, "device", 400, "bad_request", "malformed", raw=b'{"battery_pct": NaN}'),
    case("single-quotes", "POST", HB, "device", 400, "bad_request", "malformed", raw=b"{'status': 'ok'}"),
    case("utf8-bom", "POST", HB, "device", 400, "bad_request", "malformed", raw=b"\xef\xbb\xbf{}"),
    case("invalid-utf8", "POST", HB, "device", 400, "invalid_utf8", "UTF-8", raw=b'{"status": "\xff"}'),
    case("invalid-utf8-enroll", "POST", ENROLL, "enrollment", 400, "invalid_utf8", "UTF-8",
         raw=b'{"device_id": "\xc3"}'),
    case("empty-body", "POST", HB, "device", 400, "empty_body", "empty", raw=b""),
    case("json-null", "POST", HB, "device", 422, "validation_failed", "Expected `object`", raw=b"null"),
    case("json-array", "POST", ENROLL, "enrollment", 422, "validation_failed", "Expected `object`", json=[]),
    case("malformed-command", "POST", CMD, "admin", 400, "bad_request", "", raw=b'{"action": ping}', headers=KEY),
    case("malformed-ack", "POST", ACK, "fresh", 400, "bad_request", "", raw=b'{"status"'),
    # ---- wrong content type (415 comes before the body is read)
    case("text-plain", "POST", HB, "device", 415, "unsupported_media_type", "JSON",
         raw=b"{}", headers={"content-type": "text/plain"}),
    case("no-content-type", "POST", HB, "device", 415, "unsupported_media_type", "JSON",
         raw=b"{}", headers={"content-type": ""}),
    case("form-encoded", "POST", ENROLL, "enrollment", 415, "unsupported_media_type", "JSON",
         raw=b"device_id=x", headers={"content-type": "application/x-www-form-urlencoded"}),
    case("xml", "POST", CMD, "admin", 415, "unsupported_media_type", "JSON",
         raw=b"<action>ping</action>", headers=KEY | {"content-type": "application/xml"}),
    case("json-to-upload", "POST", "/v1/apk/builds", "admin", 415, "unsupported_media_type", "multipart",
         json={"version_code": 8}),
    case("latin1-charset", "POST", HB, "device", 400, "invalid_utf8", "UTF-8",
         raw='{"status": "\u00e9"}'.encode("latin-1"), headers={"content-type": "application/json; charset=latin-1"}),
    # ---- 1 MB bodies (64 KiB limit; uploads have their own)
    case("1mb-heartbeat", "POST", HB, "device", 413, "payload_too_large", "", raw=b'{"pad": "' + b"x" * MB + b'"}'),
    case("1mb-enroll", "POST", ENROLL, "enrollment", 413, "payload_too_large", "",
         raw=b'{"device_id": "' + b"x" * MB + b'"}'),
    case("1mb-command", "POST", CMD, "admin", 413, "payload_too_large", "",
         raw=b'{"action": "ping", "payload": {"a": "' + b"x" * MB + b'"}}', headers=KEY),
    case("1mb-ack", "POST", ACK, "fresh", 413, "payload_too_large", "", raw=b'{"detail": "' + b"x" * MB + b'"}'),
    case("1mb-whitespace", "POST", HB, "device", 413, "payload_too_large", "", raw=b" " * MB + b"{}"),
    # ---- deep nesting
    case("10000-levels-heartbeat", "POST", HB, "device", 400, "json_too_deep", f"deeper than {MAX_DEPTH}",
         raw=('{"x":' + "[" * 10_000 + "]" * 10_000 + "}").encode()),
    case("10000-levels-unclosed", "POST", HB, "device", 400, "json_too_deep", "", raw=b"[" * 10_000),
    case("10000-levels-payload", "POST", CMD, "admin", 400, "json_too_deep", "",
         raw=('{"action":"ping","payload":' + nested(10_000) + "}").encode(), headers=KEY),
    case("33-levels-payload", "POST", CMD, "admin", 400, "json_too_deep", "",
         raw=('{"action":"ping","payload":' + nested(MAX_DEPTH) + "}").encode(), headers=KEY),
    case("32-levels-payload-accepted", "POST", CMD, "admin", 202,
         raw=('{"action":"echo","payload":' + nested(MAX_DEPTH - 1) + "}").encode(), headers=KEY,
         writes={"fcm_dispatches": 1, "audit_events": 1}),
    case("brackets-in-strings-are-not-depth", "POST", HB, "fresh", 201,
         json={"note": "[" * 10_000}, writes=BEAT, check=key_not_stored("[[[[")),
    # ---- the worst bodies constructed for each pre-parse check (issue #11: linear, tests/api/test_jsonbody.py)
    case("quadratic-escaped-quotes", "POST", HB, "device", 400, "json_too_deep", "",
         raw=b"[" * (MAX_DEPTH + 1) + b'\\"' * 32_000),
    case("quadratic-escaped-quotes-enroll", "POST", ENROLL, "enrollment", 400, "json_too_deep", "",
         raw=b"[" * (MAX_DEPTH + 1) + b'\\"' * 32_000),
    case("unterminated-escaped-quotes", "POST", HB, "device", 400, "bad_request", "", raw=b'"' + b'\\"' * 32_000),
    case("backslash-quote-runs", "POST", HB, "device", 400, "bad_request", "", raw=b'{"a": "' + b'\\\\\\"' * 16_000),
    case("64k-quotes", "POST", HB, "device", 422, "validation_failed", "Expected `object`", raw=b'"' * 64_000),
    case("64k-unclosed-brackets", "POST", HB, "device", 400, "json_too_deep", "", raw=b"[" * 64_000),
    case("64k-comb-brackets", "POST", HB, "device", 400, "json_too_deep", "", raw=b"[[]" * 21_000),
    case("64k-brackets-at-the-limit", "POST", HB, "device", 422, "validation_failed", "Expected `object`",
         raw=b"[" + b",".join([b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)] * 1000) + b"]"),
    case("64k-invalid-utf8-at-end", "POST", HB, "device", 400, "invalid_utf8", "UTF-8",
         raw=b'{"status": "' + "\u20ac".encode() * 21_000 + b'\xff"}'),
    case("20k-objects-then-a-repeat", "POST", HB, "device", 400, "duplicate_json_key", "repeats an object key",
         raw=b'{"x": [' + b"{}," * 21_000 + b'{"a": 0, "a": 1}]}'),
    case("6000-keys-then-a-repeat", "POST", HB, "device", 400, "duplicate_json_key", "repeats an object key",
         raw=b"{" + b",".join(b'"k%d":0' % i for i in range(6_000)) + b',"k0":1}'),
    case("8000-one-key-objects", "POST", HB, "device", 422, "validation_failed", "Expected `object`",
         raw=b"[" + b",".join([b'{"a":0}'] * 8_000) + b"]"),
    # ---- battery and network type
    case("battery-minus-1", "POST", HB, "device", 422, "validation_failed", "battery_pct: Expected `int` >= 0",
         json={"battery_pct": -1}),
    case("battery-101", "POST", HB, "device", 422, "validation_failed", "battery_pct: Expected `int` <= 100",
         json={"battery_pct": 101}),
    case("battery-float", "POST", HB, "device", 422, "validation_failed", "battery_pct", json={"battery_pct": 50.5}),
    case("battery-bool", "POST", HB, "device", 422, "validation_failed", "battery_pct", json={"battery_pct": True}),
    case("battery-5000-digits", "POST", HB, "device", 422, "validation_failed",
         "battery_pct: Integer value out of range", raw=b'{"battery_pct": ' + b"9" * 5000 + b"}"),
    case("battery-1e400", "POST", HB, "device", 422, "validation_failed", "battery_pct",
         raw=b'{"battery_pct": 1e400}'),
    case("battery-as-string", "POST", HB, "device", 422, "validation_failed", "battery_pct",
         json={"battery_pct": "80"}),
    case("plugged-as-number", "POST", HB, "device", 422, "validation_failed", "plugged", json={"plugged": 0}),
    # a whole float (valid for an integer) before it must not switch the rest of the body to loose conversion
    case("plugged-as-number-after-a-whole-float", "POST", HB, "device", 422, "validation_failed", "plugged",
         json={"battery_pct": 50.0, "plugged": 0}),
    *[
        case(f"network-{name}", "POST", HB, "device", 422, "validation_failed", "network_type",
             json={"network_type": value})
        for name, value in (("5g", "5g"), ("uppercase", "WIFI"), ("empty", ""), ("nul", "wifi\x00"), ("number", 1))
    ],
    # ---- mass assignment
    case("heartbeat-id-last-seen-bucket", "POST", HB, "fresh", 201, json={
        "id": 1, "last_seen_at": "2999-01-01T00:00:00Z", "bucket_start": "2999-01-01T00:00:00Z",
        "received_at": "1970-01-01T00:00:00Z", "revoked_at": "2000-01-01T00:00:00Z", "device_token_hash": "0" * 64,
    }, writes=BEAT, check=heartbeat_ignored_fields),
    case("heartbeat-own-device-id", "POST", HB, "fresh", 201, json={"device_id": "@me@"}, writes=BEAT),
    case("heartbeat-other-device-id", "POST", HB, "device", 403, "forbidden", "not the device",
         json={"device_id": "dev_002", "battery_pct": 1}),
    case("heartbeat-unknown-device-id", "POST", HB, "device", 403, "forbidden", "not the device",
         json={"device_id": "nobody"}),
    case("enroll-id-last-seen-hash", "POST", ENROLL, "enrollment", 201, json={
        "device_id": "@new@", "id": "999", "last_seen_at": "2999-01-01T00:00:00Z", "revoked_at": "2000-01-01T00:00:00Z",
        "enrolled_at": "1970-01-01T00:00:00Z", "device_token_hash": "0" * 64, "enrollment_token_id": "enr_x",
        "fcm_token_dead_at": "2000-01-01T00:00:00Z", "device_token": "nxd_chosen",
    }, writes=ENROLLED, check=enroll_ignored_fields),
    case("enroll-other-device-id", "POST", ENROLL, "enrollment", 409, "conflict", "already enrolled",
         json={"device_id": "dev_002"}),
    case("enroll-other-device-id-with-my-token", "POST", ENROLL, "enrollment", 409, "conflict", "already enrolled",
         json={"device_id": "dev_002", "current_device_token": "@mytoken@"}),
    case("ack-device-id-acked-at", "POST", ACK, "fresh", 200, json={
        "status": "completed", "device_id": "dev_002", "acked_at": "2999-01-01T00:00:00Z", "request_id": "cmd-other",
    }, check=ack_ignored_fields),
    case("ack-other-devices-command", "POST", "/v1/commands/cmd-other/ack", "device", 404, "not_found", "",
         json={"status": "completed"}),
    *[
        case(f"command-{name}", "POST", CMD, "admin", 422, "validation_failed", f"unknown field `{name}`",
             json={"action": "ping", name: value}, headers=KEY)
        for name, value in (
            ("id", 1), ("device_id", "dev_002"), ("request_id", "cmd-other"), ("status", "acked"),
            ("fcm_status", "sent"), ("created_at", "2999-01-01T00:00:00Z"), ("replay_count", 9),
        )
    ],
    # ---- NUL, control and bidi characters, 10 KB strings: ids
    *[
        case(f"enroll-device-id-{name}", "POST", ENROLL, "enrollment", 422, "validation_failed", "device_id",
             json={"device_id": value})
        for name, value in (
            ("nul", "dev\x00x"), ("escape", "dev\x1b[31m"), ("bidi", f"dev{BIDI}x"), ("10kb", "d" * KB10),
            ("newline", "dev\nx"), ("empty", ""),
        )
    ],
    *[
        case(f"heartbeat-device-id-{name}", "POST", HB, "device", 422, "validation_failed",
             "device_id: Expected `str`", json={"device_id": value})
        for name, value in (("nul", "dev_001\x00"), ("bidi", f"dev_001{BIDI}"), ("10kb", "d" * KB10))
    ],
    *[
        case(f"path-device-id-{name}", "POST", f"/v1/devices/{quote(value, safe='')}/commands", "admin", 422,
             "invalid_argument", "device_id must be", json={"action": "ping"}, headers=KEY)
        for name, value in (("nul", "dev\x00001"), ("bidi", f"dev{BIDI}001"), ("10kb", "d" * KB10), ("tab", "dev\t1"))
    ],
    case("show-device-nul", "GET", "/v1/devices/dev_001%00", "admin", 422, "invalid_argument", "device_id must be"),
    *[
        case(f"ack-request-id-{name}", "POST", f"/v1/commands/{quote(value, safe='')}/ack", "device", 400,
             "invalid_request_id", "request_id must be", json={"status": "completed"})
        for name, value in (
            ("nul", "cmd\x00mine"), ("bidi", f"cmd-mine{BIDI}"), ("10kb", "r" * KB10), ("escape", "\x1b"),
        )
    ],
    case("show-command-10kb", "GET", f"/v1/commands/{'r' * KB10}", "admin", 400, "invalid_request_id",
         "request_id must be"),
    *[
        case(f"idempotency-key-{name}", "POST", CMD, "admin", 400, "idempotency_key_invalid",
             "Idempotency-Key must be", json={"action": "ping"}, headers={"Idempotency-Key": value})
        for name, value in (
            ("nul", b"key\x00x"), ("control", b"key\x01x"), ("bidi", f"key{BIDI}x".encode()), ("10kb", "k" * KB10),
            ("256-chars", "k" * 256), ("space", "a b"), ("slash", "a/b"),
        )
    ],
    case("idempotency-key-missing", "POST", CMD, "admin", 400, "idempotency_key_missing", "required",
         json={"action": "ping"}),
    case("idempotency-key-reserved", "POST", CMD, "admin", 422, "invalid_argument", "reserved",
         json={"action": "ping"}, headers={"Idempotency-Key": "pending"}),
    # ---- ... and keys: device bodies ignore unknown keys (never stored), admin bodies refuse them
    *[
        case(f"heartbeat-key-{name}", "POST", HB, "fresh", 201, json={key: "hostile-value", "battery_pct": 42},
             writes=BEAT, check=key_not_stored("hostile-value"))
        for name, key in (("nul", "status\x00"), ("bidi", f"sta{BIDI}tus"), ("10kb", "k" * KB10), ("empty", ""))
    ],
    case("enroll-key-nul-10kb", "POST", ENROLL, "enrollment", 201,
         json={"device_id": "@new@", "model\x00": "hostile-value", "k" * KB10: "hostile-value"},
         writes=ENROLLED, check=key_not_stored("hostile-value")),
    case("ack-key-bidi", "POST", ACK, "fresh", 200, json={"status": "completed", f"de{BIDI}tail": "hostile-value"},
         check=key_not_stored("hostile-value")),
    case("command-key-nul", "POST", CMD, "admin", 422, "validation_failed", "unknown field",
         json={"action": "ping", "pay\x00load": {}}, headers=KEY),
    *[
        case(f"payload-key-{name}", "POST", CMD, "admin", 422, "invalid_argument", detail,
             json={"action": "ping", "payload": {key: 1}}, headers=KEY)
        for name, key, detail in (
            ("nul", "a\x00b", "control characters"),
            ("bidi", f"a{BIDI}b", "control characters"),
            ("nested-escape", "\x1b", "control characters"),
            ("10kb", "k" * KB10, "FCM accepts at most 4096"),
        )
    ],
    case("payload-value-bidi-nested", "POST", CMD, "admin", 422, "invalid_argument", "control characters",
         json={"action": "ping", "payload": {"a": [{"b": f"x{BIDI}"}]}}, headers=KEY),
    *[
        case(f"{name}-value-{kind}", "POST", path, who, 422, "validation_failed", f"{field}: Expected `str` matching",
             json=body | {field: value})
        for name, path, who, field, body in (
            ("agent-version", HB, "device", "agent_version", {}),
            ("fcm-token", HB, "device", "fcm_token", {}),
            ("model", ENROLL, "enrollment", "model", {"device_id": "@new@"}),
            ("ack-detail", ACK, "fresh", "detail", {"status": "failed"}),
        )
        for kind, value in (("nul", "a\x00b"), ("bidi", f"a{BIDI}b"), ("escape", "a\x1b[2Jb"))
    ],
    # ---- timestamps: a device's clock is never trusted; cursors are checked
    *[
        case(f"heartbeat-timestamp-{name}", "POST", HB, "fresh", 201,
             json={"timestamp": value, "sent_at": value, "recorded_at": value, "received_at": value},
             writes=BEAT, check=heartbeat_ignored_fields)
        for name, value in (
            ("far-future", "9999-12-31T23:59:59Z"), ("far-past", "0001-01-01T00:00:00Z"),
            ("non-utc", "2024-06-01T12:00:00+14:00"), ("naive", "2024-06-01T12:00:00"), ("epoch-ms", 253402300799000),
        )
    ],
    *[
        case(f"cursor-{name}", "GET", f"/v1/devices/dev_001/heartbeats?cursor={value}", "admin", 200)
        for name, value in (("far-future", "9" * 17), ("epoch", "0"))
    ],
    *[
        case(f"cursor-{name}", "GET", f"/v1/devices/dev_001/heartbeats?cursor={value}", "admin", 422,
             "validation_failed", "cursor")
        for name, value in (
            ("too-long", "9" * 18), ("negative", "-1"), ("iso-time", "2024-06-01T12:00:00Z"), ("nul", "1%00"),
            ("10kb", "1" * KB10),
        )
    ],
    *[
        case(f"devices-cursor-{name}", "GET", f"/v1/devices?cursor={value}", "admin", 422, "validation_failed",
             "cursor")
        for name, value in (("bidi", quote(f"dev{BIDI}")), ("nul", "dev%00"), ("10kb", "d" * KB10))
    ],
    # ---- duplicate JSON keys: refused, whichever copy is valid
    case("duplicate-battery-invalid-last", "POST", HB, "device", 400, "duplicate_json_key",
         'repeats the key "battery_pct"', raw=b'{"battery_pct": 50, "battery_pct": 101}'),
    case("duplicate-battery-valid-last", "POST", HB, "device", 400, "duplicate_json_key", "battery_pct",
         raw=b'{"battery_pct": 101, "battery_pct": 50}'),
    case("duplicate-device-id-enroll", "POST", ENROLL, "enrollment", 400, "duplicate_json_key", "device_id",
         raw=b'{"device_id": "dup-a", "device_id": "dup-b"}'),
    case("duplicate-device-id-heartbeat", "POST", HB, "device", 400, "duplicate_json_key", "device_id",
         raw=b'{"device_id": "dev_001", "device_id": "dev_002"}'),
    case("duplicate-action", "POST", CMD, "admin", 400, "duplicate_json_key", "action",
         raw=b'{"action": "ping", "action": "reboot"}', headers=KEY),
    case("duplicate-in-payload", "POST", CMD, "admin", 400, "duplicate_json_key", "seconds",
         raw=b'{"action": "ring", "payload": {"x": [{"seconds": 1, "seconds": 2}]}}', headers=KEY),
    case("duplicate-ack-status", "POST", ACK, "fresh", 400, "duplicate_json_key", "status",
         raw=b'{"status": "completed", "status": "failed"}'),
    case("duplicate-unknown-key", "POST", HB, "device", 400, "duplicate_json_key", "x", raw=b'{"x": 1, "x": 2}'),
    case("duplicate-escaped-spelling", "POST", HB, "device", 400, "duplicate_json_key", "status",
         raw=b'{"status": "ok", "st\\u0061tus": "bad"}'),
    # ---- Range on the APK download (admin: source "manual"; one audit event per download from byte 0)
    case("range-overlapping", "GET", DOWNLOAD, "admin", 200, headers={"Range": "bytes=0-99,50-149"},
         writes=DOWNLOADED, check=whole_file),
    case("range-multiple", "GET", DOWNLOAD, "admin", 200, headers={"Range": "bytes=0-0,-1"},
         writes=DOWNLOADED, check=whole_file),
    case("range-1000-ranges", "GET", DOWNLOAD, "admin", 200, headers={"Range": "bytes=" + ",".join(["0-0"] * 1000)},
         writes=DOWNLOADED, check=whole_file),
    case("range-end-past-file", "GET", DOWNLOAD, "admin", 206, headers={"Range": "bytes=0-999999999"},
         writes=DOWNLOADED, check=clipped_to_file),
    case("range-suffix-larger-than-file", "GET", DOWNLOAD, "admin", 206, headers={"Range": "bytes=-999999999"},
         writes=DOWNLOADED, check=clipped_to_file),
    case("range-start-past-file", "GET", DOWNLOAD, "admin", 416, "range_not_satisfiable", "beyond the end",
         headers={"Range": "bytes=@size@-"}, check=unsatisfiable),
    case("range-suffix-zero", "GET", DOWNLOAD, "admin", 416, "range_not_satisfiable", "beyond the end",
         headers={"Range": "bytes=-0"}, check=unsatisfiable),
    case("range-5000-digit-start", "GET", DOWNLOAD, "admin", 416, "range_not_satisfiable", "beyond the end",
         headers={"Range": "bytes=" + "9" * 5000 + "-"}, check=unsatisfiable),
    case("range-5000-digit-end", "GET", DOWNLOAD, "admin", 206, headers={"Range": "bytes=0-" + "9" * 5000},
         writes=DOWNLOADED, check=clipped_to_file),
    case("range-5000-digit-suffix", "GET", DOWNLOAD, "admin", 206, headers={"Range": "bytes=-" + "9" * 5000},
         writes=DOWNLOADED, check=clipped_to_file),
    case("range-reversed", "GET", DOWNLOAD, "admin", 200, headers={"Range": "bytes=10-5"},
         writes=DOWNLOADED, check=whole_file),
    case("range-other-unit", "GET", DOWNLOAD, "admin", 200, headers={"Range": "items=0-5"},
         writes=DOWNLOADED, check=whole_file),
    case("range-bidi", "GET", DOWNLOAD, "admin", 200, headers={"Range": f"bytes={BIDI}0-5".encode()},
         writes=DOWNLOADED, check=whole_file),
    case("range-resume-writes-no-event", "GET", DOWNLOAD, "admin", 206, headers={"Range": "bytes=100-"}),
    # ---- path integers are 1..2^31-1 (issue #11: 2^63 was an OverflowError on SQLite, a 500)
    *[
        case(f"build-id-{name}", method, path, who, 422, "validation_failed", "build_id")
        for name, method, path, who in (
            ("2-to-the-63", "GET", "/v1/apk/download/9223372036854775808", "device"),
            ("2-to-the-63-enrollment", "GET", "/v1/apk/download/9223372036854775808", "enrollment"),
            ("2-to-the-31", "GET", "/v1/apk/download/2147483648", "admin"),
            ("zero", "GET", "/v1/apk/download/0", "device"),
            ("remove-2-to-the-63", "DELETE", "/v1/apk/builds/9223372036854775808", "admin"),
            ("remove-zero", "DELETE", "/v1/apk/builds/0", "admin"),
        )
    ],
    # int() refuses more than 4300 digits: the path matches no route
    case("build-id-5000-digits", "GET", "/v1/apk/download/" + "9" * 5000, "device", 404, "not_found", ""),
    case("build-id-largest-is-just-unknown", "GET", "/v1/apk/download/2147483647", "device", 404, "not_found", ""),
    # ---- the Host header never reaches a URL the server hands out (issue #11)
    case("host-header-poisoning", "GET", "/v1/apk/latest", "device", 200, headers={"Host": "evil.example"},
         check=lambda ctx, response: _relative_download_url(response)),
    # ---- the upload: only a ZIP holding AndroidManifest.xml is an APK (issue #11)
    *[
        case(f"upload-{name}", "POST", "/v1/apk/builds", "admin", 422, "invalid_argument", "not an APK",
             raw=_form(content), headers=FORM)
        for name, content in (("one-byte-p", b"P"), ("zip-magic-only", b"PK\x03\x04" * 100),
                              ("zip-without-manifest", _zip({"classes.dex": b"x"})))
    ],
    case("upload-text-field-8kb", "POST", "/v1/apk/builds", "admin", 413, "payload_too_large", "at most 4096",
         raw=_form(_apk_bytes(), name="v" * 8192), headers=FORM),
    case("upload-unknown-field", "POST", "/v1/apk/builds", "admin", 422, "invalid_argument", "unexpected form field",
         raw=_form(_apk_bytes(), extra=b"is_admin"), headers=FORM),
]
# fmt: on


def _fill(value: str, ctx: Context, tokens: dict[str, str]) -> str:
    for name, replacement in (
        ("@me@", ctx.me),
        ("@cmd@", ctx.cmd),
        ("@new@", ctx.new),
        ("@size@", str(ctx.world.apk_size)),
        ("@mytoken@", tokens["fresh"]),
    ):
        value = value.replace(name, replacement)
    return value


@pytest.mark.parametrize("hostile", CASES)
def test_hostile_input(world: World, hostile: Case) -> None:
    started = datetime.now(UTC)
    me, fresh_token = (
        world.fresh_device() if hostile.who == "fresh" or "@mytoken@" in repr(hostile.json) else ("dev_001", "")
    )
    cmd = world.command_for(me) if "@cmd@" in hostile.path else "cmd-mine"
    ctx = Context(world, me=me, cmd=cmd, new=world.new_id(), started=started)
    tokens = {"device": world.device, "fresh": fresh_token, "admin": world.admin, "enrollment": world.enrollment}
    headers: dict[str, Any] = world.bearer(tokens[hostile.who])
    for name, value in hostile.headers.items():
        headers[name] = _fill(value, ctx, tokens) if isinstance(value, str) else value
    if hostile.json is not None:
        content = _fill(json.dumps(hostile.json), ctx, tokens).encode()
        headers.setdefault("content-type", "application/json")
    elif hostile.raw is not None:
        content = hostile.raw
        headers.setdefault("content-type", "application/json")
    else:
        content = None
    if headers.get("content-type") == "":
        del headers["content-type"]

    before = snapshot(world.engine)
    response = world.client.request(hostile.method, _fill(hostile.path, ctx, tokens), content=content, headers=headers)
    after = snapshot(world.engine)

    assert response.status_code == hostile.status, response.text[:500]
    if hostile.code is not None:
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"] == "about:blank"
        assert problem["title"] == HTTPStatus(hostile.status).phrase
        assert problem["status"] == hostile.status
        assert problem["code"] == hostile.code, problem
        assert hostile.detail in problem["detail"], problem
        assert after == before, "an error wrote to the database"
    else:
        assert response.headers["content-type"] != PROBLEM
        was, now = counts(before), counts(after)
        written = {name: now[name] - was[name] for name in now if now[name] != was[name]}
        assert written == hostile.writes, f"rows written: {written}, expected {hostile.writes}"
    if hostile.check is not None:
        hostile.check(ctx, response)


def test_every_documented_problem_code_is_in_the_catalogue_docs() -> None:
    """Each problem code this catalogue expects is documented in docs/api.md."""
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    codes = {p.values[0].code for p in CASES if p.values[0].code}
    assert {code for code in codes if f"`{code}`" not in docs} == set()
