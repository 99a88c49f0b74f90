"""Credentials (issue #7, item 6), on SQLite and PostgreSQL.

* After a full run of traffic (CLI-created enrollment token and admin key, enrollments, a lost-answer retry,
  heartbeats, commands, acks, admin calls, token rotation, revocations, failed authentications and 4xx
  error paths), no secret that was issued appears in any log record of any logger at DEBUG (SQL statements
  with their parameters included), in any response body or header, in any text column of any table, or
  in the CLI's lists; their SHA-256 hashes do appear in the database (the scan sees the columns).
* Expired, revoked and exhausted enrollment tokens are refused with the documented problem, on every
  endpoint that takes them, writing nothing.
* Brute force is answered with 429 (the limiter's own tests are ``tests/api/test_ratelimit.py`` and
  ``tests/api/test_service.py``; these add guesses of every credential kind, across endpoints).
* A revoked device's token (``nexmdm devices revoke``, from another process's point of view: the CLI's
  own engine) stops working at the very next request on every device endpoint. The server keeps no
  authentication cache (every request looks the token's hash up in the database), so there is none to
  outlive a revocation; the request just before the revocation succeeds, so a cache would show.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from core.base.settings import Settings
from core.models import AuditEvent, Base, EnrollmentToken
from core.storage.types import utcnow
from nexmdm_api import create_app
from nexmdm_cli.main import app as cli_app

PROBLEM = "application/problem+json"


# ----------------------------------------------------------------------------------------- helpers


class Capture:
    """Every log record that any logger creates, through the record factory.

    A handler on the root logger is not enough: Litestar's default logging configuration replaces the root
    handlers (and levels) when an app starts. The record factory sees every record a logger creates, so
    the test only has to keep every logger at DEBUG (``everything``, again after the app has started).
    """

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self._factory = logging.getLogRecordFactory()
        self._saved: dict[logging.Logger, tuple[int, bool]] = {}

    def _make(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self._factory(*args, **kwargs)
        self.records.append(record)
        return record

    def everything(self) -> None:
        """Every logger (existing ones included) at DEBUG and enabled."""
        loggers = [logging.getLogger()] + [
            logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
        ]
        for logger in loggers:
            self._saved.setdefault(logger, (logger.level, logger.disabled))
            logger.setLevel(logging.DEBUG)
            logger.disabled = False

    def start(self) -> None:
        logging.setLogRecordFactory(self._make)
        self.everything()

    def stop(self) -> None:
        logging.setLogRecordFactory(self._factory)
        for logger, (level, disabled) in self._saved.items():
            logger.setLevel(level)
            logger.disabled = disabled

    def text(self) -> str:
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        return "\n".join(f"{formatter.format(record)} {record.args!r}" for record in self.records)


@pytest.fixture
def logs() -> Iterator[Capture]:
    capture = Capture()
    capture.start()
    yield capture
    capture.stop()


class Cli:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.env = {"NEXMDM_DATA_DIR": str(tmp / "cli-data"), "COLUMNS": "200"}
        self.outputs: list[str] = []

    def __call__(self, *args: str) -> str:
        result = CliRunner().invoke(cli_app, ["--database-url", self.url, "-v", *args], env=self.env)
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))


@dataclass
class Recorder:
    """The test client, keeping every response for the scan."""

    client: TestClient[Any]
    responses: list[httpx.Response] = field(default_factory=list)

    def __call__(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = self.client.request(method, path, headers=headers, **kwargs)
        self.responses.append(response)
        return response


def database_text(engine: Engine) -> str:
    """Every value of every row of every table, as text."""
    parts = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.extend(str(value) for value in row)
    return "\n".join(parts)


def table_text(engine: Engine, name: str) -> str:
    table = Base.metadata.tables[name]
    with engine.connect() as conn:
        return "\n".join(str(value) for row in conn.execute(select(table)) for value in row)


def response_without_issued_token(response: httpx.Response) -> str:
    """A response's status, headers and body, less the one secret it exists to hand out (an enrollment's)."""
    text = f"{response.status_code} {response.headers.raw!r} {response.content!r}"
    if response.request.url.path == "/v1/enroll" and response.status_code == 201:
        for field in ("device_token", "enrollment_secret"):
            issued = response.json()[field]
            assert text.count(issued) == 1
            text = text.replace(issued, f"<issued {field}>")
    return text


#: written by the server's own maintenance on its schedule (leader lease, presence sweeps), not by a request
MAINTENANCE = {"audit_events", "leases", "presence_sweeps"}


def without_audit(counts: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in counts.items() if name not in MAINTENANCE}


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}


def leaks(secret: str, haystack: str) -> bool:
    """The secret, or a recognisable part of its random half (a truncated or masked log would show one)."""
    random_part = secret.split("_", 1)[1]
    return any(piece in haystack for piece in (secret, random_part[:12], random_part[-12:]))


def apk_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("AndroidManifest.xml", "<manifest/>")
    return buffer.getvalue()


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert (body["type"], body["title"], body["status"], body["code"]) == (
        "about:blank",
        "Unauthorized",
        401,
        "unauthorized",
    )


# ------------------------------------------------------------------------------ the full run + scan


def test_no_secret_in_logs_responses_or_database(
    settings: Settings, engine: Engine, logs: Capture, tmp_path: Path
) -> None:
    cli = Cli(settings.database_url, tmp_path)
    enrollment = cli.json("tokens", "create", "--uses", "10", "--expires", "1h", "--note", "rollout")
    admin_key = cli.json("keys", "create", "--name", "ops")
    hook = cli.json(
        "webhooks", "add", "https://hooks.example.com/in", "--events", "device.enrolled,device.revoked,command.failed"
    )
    secrets = [enrollment["secret"], admin_key["secret"]]
    nxe, nxa = enrollment["secret"], admin_key["secret"]

    app_settings = settings.with_overrides(log_level="DEBUG", auth_failure_limit=1000)
    with TestClient(create_app(app_settings)) as client:
        logs.everything()  # Litestar's logging configuration has just reset the levels
        call = Recorder(client)
        # enrollment, a retry whose first answer was "lost", heartbeats with push tokens
        tokens: dict[str, str] = {}
        for device_id in ("dev_a", "dev_b", "dev_c"):
            response = call("POST", "/v1/enroll", nxe, json={"device_id": device_id, "model": "Pixel 8"})
            assert response.status_code == 201, response.text
            tokens[device_id] = response.json()["device_token"]
            secrets += [tokens[device_id], response.json()["enrollment_secret"]]
        lost = secrets[-1]  # dev_c's answer was lost: its retry presents the one-time secret
        retry = call("POST", "/v1/enroll", nxe, json={"device_id": "dev_c", "enrollment_secret": lost})
        assert retry.status_code == 201
        tokens["dev_c"] = retry.json()["device_token"]
        secrets += [tokens["dev_c"], retry.json()["enrollment_secret"]]
        for device_id, token in tokens.items():
            beat = {"status": "ok", "battery_pct": 80, "network_type": "wifi", "fcm_token": f"fcm-{device_id}"}
            assert call("POST", "/v1/heartbeat", token, json=beat).status_code == 201
        # admin calls: commands, lists, one dispatch, APK upload and download
        for index, device_id in enumerate(tokens):
            response = call(
                "POST",
                f"/v1/devices/{device_id}/commands",
                nxa,
                json={"action": "ring", "payload": {"seconds": index + 1}},
                headers={"Idempotency-Key": f"cmd-{device_id}"},
            )
            assert response.status_code == 202, response.text
        replay = call(
            "POST",
            "/v1/devices/dev_a/commands",
            nxa,
            json={"action": "ring", "payload": {"seconds": 1}},
            headers={"Idempotency-Key": "cmd-dev_a"},
        )
        assert replay.status_code == 200
        assert call("GET", "/v1/devices", nxa).status_code == 200
        assert call("GET", "/v1/devices/dev_a", nxa).status_code == 200
        assert call("GET", "/v1/devices/dev_a/heartbeats", nxa).status_code == 200
        assert call("GET", "/v1/commands/cmd-dev_a", nxa).status_code == 200
        upload = call(
            "POST",
            "/v1/apk/builds",
            nxa,
            files={"file": ("agent.apk", apk_bytes(), "application/vnd.android.package-archive")},
            data={"version_code": "1", "version_name": "1.0"},
        )
        assert upload.status_code == 201, upload.text
        for token in (nxe, tokens["dev_a"], nxa):
            assert call("GET", "/v1/apk/latest", token).status_code == 200
            assert call("GET", "/v1/apk/download/latest", token).status_code == 200
        # devices fetch and acknowledge their commands
        for device_id, token in tokens.items():
            pending = call("GET", "/v1/commands/pending", token).json()["items"]
            assert [item["request_id"] for item in pending] == [f"cmd-{device_id}"]
            ack = call("POST", f"/v1/commands/cmd-{device_id}/ack", token, json={"status": "completed"})
            assert ack.status_code == 200
        # token rotation: dev_a presents its current token and gets a new one; the old one stops working
        rotated = call("POST", "/v1/enroll", nxe, json={"device_id": "dev_a", "current_device_token": tokens["dev_a"]})
        assert rotated.status_code == 201, rotated.text
        old_a, tokens["dev_a"] = tokens["dev_a"], rotated.json()["device_token"]
        secrets += [tokens["dev_a"], rotated.json()["enrollment_secret"]]
        assert_unauthorized(call("POST", "/v1/heartbeat", old_a, json={}))
        # failed authentications: guesses, the wrong kind, mangled real tokens, another scheme
        failures = [
            call("POST", "/v1/heartbeat", "nxd_" + "A" * 43, json={}),
            call("POST", "/v1/heartbeat", nxa, json={}),
            call("POST", "/v1/heartbeat", nxe, json={}),
            call("GET", "/v1/devices", tokens["dev_b"]),
            call("POST", "/v1/enroll", tokens["dev_b"], json={"device_id": "dev_x"}),
            call("POST", "/v1/heartbeat", tokens["dev_b"] + "x", json={}),
            call("POST", "/v1/heartbeat", tokens["dev_b"][:-1], json={}),
            call("POST", "/v1/heartbeat", json={}, headers={"Authorization": f"Basic {tokens['dev_b']}"}),
            call("POST", "/v1/heartbeat", json={}, headers={"Authorization": f"bearer  {tokens['dev_b']} extra"}),
            call("GET", "/v1/commands/pending", old_a),
        ]
        for response in failures:
            assert_unauthorized(response)
        # error paths that are not 500s, with secrets in the request
        conflict = call("POST", "/v1/enroll", nxe, json={"device_id": "dev_b", "current_device_token": tokens["dev_c"]})
        assert conflict.status_code == 409
        invalid = call("POST", "/v1/enroll", nxe, json={"device_id": "bad id", "current_device_token": tokens["dev_c"]})
        assert invalid.status_code == 422
        ignored = call("POST", "/v1/heartbeat", tokens["dev_b"], json={"device_token": tokens["dev_c"], "x": nxa})
        assert ignored.status_code in (200, 201)
        forbidden = call("POST", "/v1/heartbeat", tokens["dev_b"], json={"device_id": "dev_c"})
        assert forbidden.status_code == 403
        reused = call(
            "POST",
            "/v1/devices/dev_b/commands",
            nxa,
            json={"action": "reboot"},
            headers={"Idempotency-Key": "cmd-dev_a"},
        )
        assert reused.status_code == 422
        assert (
            call("POST", "/v1/commands/cmd-dev_a/ack", tokens["dev_b"], json={"status": "completed"}).status_code == 404
        )
        assert call("POST", "/v1/commands/cmd-dev_b/ack", tokens["dev_b"], json={"status": "failed"}).status_code == 409
        # a command that fails on the device: a webhook event (with the payload's hash, never the payload)
        failing = call(
            "POST",
            "/v1/devices/dev_b/commands",
            nxa,
            json={"action": "lock", "payload": {"message": "PAYLOAD-7731"}},
            headers={"Idempotency-Key": "cmd-fail"},
        )
        assert failing.status_code == 202
        detail = {"status": "failed", "detail": "DETAIL-4411"}
        assert call("POST", "/v1/commands/cmd-fail/ack", tokens["dev_b"], json=detail).status_code == 200
        # revocations through the CLI (its own engine, as an operator's shell would be)
        cli("devices", "revoke", "dev_c", "--yes")
        assert_unauthorized(call("POST", "/v1/heartbeat", tokens["dev_c"], json={}))
        cli("tokens", "revoke", enrollment["id"])
        assert_unauthorized(call("POST", "/v1/enroll", nxe, json={"device_id": "dev_z"}))
        cli("keys", "revoke", "ops", "--yes")
        assert_unauthorized(call("GET", "/v1/devices", nxa))
        # the CLI's lists and views never show a secret
        listings = [
            cli("tokens", "list", "--json"),
            cli("tokens", "list"),
            cli("keys", "list", "--json"),
            cli("devices", "list", "--json"),
            cli("devices", "show", "dev_a", "--json"),
            cli("dispatches", "list", "--json"),
            cli("apk", "downloads", "--json"),
        ]

    assert len(set(secrets)) == len(secrets) == 12
    # the audit trail and the webhook bodies hold neither a credential, nor the webhook's signing secret,
    # nor a command's payload or a device's ack detail
    trail = table_text(engine, "audit_events")
    bodies = table_text(engine, "webhook_outbox")
    assert "device.revoke" in trail and "key.revoke" in trail and "command.create" in trail
    assert "device.enrolled" in bodies and "device.revoked" in bodies and "command.failed" in bodies
    for where, text in (("audit trail", trail), ("webhook bodies", bodies)):
        leaked = [s[:8] + "..." for s in [*secrets, hook["secret"]] if leaks(s, text)]
        assert leaked == [], f"secrets found in the {where}: {leaked}"
        assert "PAYLOAD-7731" not in text and "DETAIL-4411" not in text, where
    assert not leaks(hook["secret"], logs.text() + "\n".join(map(response_without_issued_token, call.responses)))
    assert not leaks(hook["secret"], "\n".join(listings) + cli("webhooks", "list", "--json"))
    stored = database_text(engine)
    log_text = logs.text()
    response_text = "\n".join(map(response_without_issued_token, call.responses))
    cli_text = "\n".join(listings)
    # the scans see what they scan: hashes in the database, requests and SQL in the logs
    assert all(hashlib.sha256(s.encode()).hexdigest() in stored for s in (nxe, nxa, tokens["dev_b"]))
    assert "db_operation" in log_text and "INSERT INTO device_heartbeats" in log_text
    assert "dev_a" in cli_text and len(call.responses) >= 50
    for where, text in (("logs", log_text), ("responses", response_text), ("database", stored), ("cli", cli_text)):
        leaked = [s[:8] + "..." for s in secrets if leaks(s, text)]
        assert leaked == [], f"secrets found in the {where}: {leaked}"


# ------------------------------------------------------------------- refused enrollment tokens


@pytest.fixture
def enrollment_tokens(session_factory: sessionmaker[Session]) -> Callable[..., str]:
    from core.enrollment import tokens as credentials

    def make(uses: int = 5) -> str:
        with session_factory.begin() as db:
            secret, _ = credentials.create_enrollment_token(db, uses=uses, expires_in=timedelta(hours=1))
        return secret

    return make


def test_expired_revoked_and_exhausted_enrollment_tokens_are_refused_everywhere(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session], enrollment_tokens, tmp_path: Path
) -> None:
    """Enroll: 401 with the token's state in the detail. APK: expired and revoked 401, exhausted still reads
    (documented: downloads take no use). None of them writes a row."""
    cli = Cli(settings.database_url, tmp_path)
    with TestClient(create_app(settings)) as client:
        call = Recorder(client)
        admin = cli.json("keys", "create", "--name", "ci")["secret"]
        assert (
            call(
                "POST",
                "/v1/apk/builds",
                admin,
                files={"file": ("a.apk", apk_bytes(), "application/vnd.android.package-archive")},
                data={"version_code": "1", "version_name": "1"},
            ).status_code
            == 201
        )
        exhausted = enrollment_tokens(uses=1)
        assert call("POST", "/v1/enroll", exhausted, json={"device_id": "first"}).status_code == 201
        expired = enrollment_tokens()
        with session_factory.begin() as db:
            db.execute(
                update(EnrollmentToken)
                .where(EnrollmentToken.token_hash == hashlib.sha256(expired.encode()).hexdigest())
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        revoked_token = cli.json("tokens", "create", "--uses", "5")
        cli("tokens", "revoke", revoked_token["id"])
        revoked = revoked_token["secret"]

        for secret, state in ((exhausted, "exhausted"), (expired, "expired"), (revoked, "revoked")):
            before = row_counts(engine)
            response = call("POST", "/v1/enroll", secret, json={"device_id": f"dev-{state}"})
            assert_unauthorized(response)
            assert response.json()["detail"] == f"enrollment token is {state}"
            assert secret not in response.text
            download = call("GET", "/v1/apk/download/latest", secret)
            latest = call("GET", "/v1/apk/latest", secret)
            if state == "exhausted":
                assert download.status_code == 200 and latest.status_code == 200
                assert row_counts(engine) == before | {"apk_download_events": before["apk_download_events"] + 1}
            else:
                assert_unauthorized(download)
                assert_unauthorized(latest)
                assert download.json()["detail"] == f"enrollment token is {state}"
                assert row_counts(engine) == before


def test_a_used_device_cannot_be_taken_over_with_the_shared_enrollment_token(client, make_token, auth) -> None:
    """The lost-answer retry (same token, same device, 10 minutes, the answer's one-time secret) rotates the
    token only before the device has used it; after its first heartbeat another holder of the token gets 409
    and the device keeps working."""
    shared = make_token(uses=100)
    answer = client.post("/v1/enroll", json={"device_id": "kiosk-1"}, headers=auth(shared)).json()
    first = answer["device_token"]
    blind = client.post("/v1/enroll", json={"device_id": "kiosk-1"}, headers=auth(shared))
    assert blind.status_code == 409  # without the answer's one-time secret even the window is closed
    lost = {"device_id": "kiosk-1", "enrollment_secret": answer["enrollment_secret"]}
    retry = client.post("/v1/enroll", json=lost, headers=auth(shared))
    assert retry.status_code == 201  # the first answer was "lost": documented
    current = retry.json()["device_token"]
    assert client.post("/v1/heartbeat", json={}, headers=auth(first)).status_code == 401
    assert client.post("/v1/heartbeat", json={}, headers=auth(current)).status_code == 201
    takeover = client.post("/v1/enroll", json={"device_id": "kiosk-1"}, headers=auth(shared))
    assert takeover.status_code == 409, takeover.text
    assert takeover.json()["code"] == "conflict" and "already enrolled" in takeover.json()["detail"]
    assert client.post("/v1/heartbeat", json={}, headers=auth(current)).status_code in (200, 201)


# ------------------------------------------------------------------------------------ brute force


def test_brute_force_on_every_credential_kind_is_answered_with_429(
    settings: Settings, engine: Engine, tmp_path
) -> None:
    """Guesses count per address whatever the endpoint or credential kind; once over the limit every further
    failure is 429 (problem, Retry-After, the guess not echoed), a valid credential still passes, and no
    guess writes a row."""
    cli = Cli(settings.database_url, tmp_path)
    nxe = cli.json("tokens", "create", "--uses", "5")["secret"]
    limited = settings.with_overrides(auth_failure_limit=6, auth_failure_window_seconds=60)
    with TestClient(create_app(limited)) as client:
        call = Recorder(client)
        device = call("POST", "/v1/enroll", nxe, json={"device_id": "dev_1"}).json()["device_token"]
        before = row_counts(engine)
        guesses = [
            ("POST", "/v1/heartbeat", "nxd_" + "a" * 43, {"json": {}}),
            ("POST", "/v1/enroll", "nxe_" + "b" * 43, {"json": {"device_id": "guess"}}),
            ("GET", "/v1/devices", "nxa_" + "c" * 43, {}),
            ("GET", "/v1/commands/pending", "nxd_" + "d" * 43, {}),
            ("GET", "/v1/apk/latest", "nxe_" + "e" * 43, {}),
            ("POST", "/v1/commands/x/ack", "nxd_" + "f" * 43, {"json": {"status": "completed"}}),
        ]
        codes = []
        for round_ in range(2):
            for method, path, guess, kwargs in guesses:
                response = call(method, path, guess[:-2] + f"{round_}Z", **kwargs)
                codes.append(response.status_code)
                assert response.headers["content-type"] == PROBLEM
                assert guess[4:20] not in response.text
        assert codes == [401] * 6 + [429] * 6, codes  # a limit of 6: six 401s, then 429
        blocked = call("POST", "/v1/enroll", "nxe_" + "g" * 43, json={"device_id": "guess"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        problem = blocked.json()
        assert (problem["type"], problem["title"], problem["code"]) == (
            "about:blank",
            "Too Many Requests",
            "rate_limited",
        )
        no_token = call("GET", "/v1/devices")
        assert no_token.status_code == 429
        # no guess writes a row; failed admin authentications are counted in the audit trail, per address
        # and minute, in aggregate rows that the server writes every few seconds (docs/audit.md)
        assert without_audit(row_counts(engine)) == without_audit(before)
        # the documented exception: valid credentials from the blocked address are never refused
        assert call("POST", "/v1/heartbeat", device, json={"status": "ok"}).status_code == 201
        assert call("GET", "/v1/commands/pending", device).status_code == 200
    with engine.connect() as conn:
        denied = conn.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.count).where(AuditEvent.outcome == "denied")
        ).all()
    # the admin-route failures (two guesses and the call without a token), one row per minute at most
    assert 1 <= len(denied) <= 2 and sum(row.count for row in denied) == 3, denied
    assert {(row.actor, row.action) for row in denied} == {("anonymous", "auth.failed")}


# ------------------------------------------------------------------------------- revoked devices


def test_a_revoked_devices_token_stops_working_at_the_next_request(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    cli = Cli(settings.database_url, tmp_path)
    nxe = cli.json("tokens", "create", "--uses", "5")["secret"]
    nxa = cli.json("keys", "create", "--name", "ops")["secret"]
    with TestClient(create_app(settings)) as client:
        call = Recorder(client)
        token = call("POST", "/v1/enroll", nxe, json={"device_id": "lost-phone"}).json()["device_token"]
        other = call("POST", "/v1/enroll", nxe, json={"device_id": "kept-phone"}).json()["device_token"]
        lock = call(
            "POST",
            "/v1/devices/lost-phone/commands",
            nxa,
            json={"action": "lock"},
            headers={"Idempotency-Key": "lock-1"},
        )
        assert lock.status_code == 202
        # every device endpoint works (and would fill any cache) right before the revocation
        assert call("POST", "/v1/heartbeat", token, json={"status": "ok"}).status_code == 201
        assert call("GET", "/v1/commands/pending", token).json()["items"][0]["request_id"] == "lock-1"
        assert call("GET", "/v1/apk/latest", token).status_code == 404  # authenticated; there is no build
        assert cli.json("devices", "revoke", "lost-phone", "--yes")["state"] == "revoked"
        before = row_counts(engine)
        assert_unauthorized(call("POST", "/v1/heartbeat", token, json={"status": "ok"}))
        assert_unauthorized(call("GET", "/v1/commands/pending", token))
        assert_unauthorized(call("POST", "/v1/commands/lock-1/ack", token, json={"status": "completed"}))
        assert_unauthorized(call("GET", "/v1/apk/latest", token))
        assert_unauthorized(call("GET", "/v1/apk/download/latest", token))
        assert row_counts(engine) == before
        # admins see it revoked and cannot command it; other devices are unaffected
        assert call("GET", "/v1/devices/lost-phone", nxa).json()["state"] == "revoked"
        again = call(
            "POST",
            "/v1/devices/lost-phone/commands",
            nxa,
            json={"action": "lock"},
            headers={"Idempotency-Key": "lock-2"},
        )
        assert again.status_code == 409 and again.json()["code"] == "conflict"
        assert call("POST", "/v1/heartbeat", other, json={}).status_code == 201
