"""A small fake of FCM HTTP v1 and Google's OAuth token endpoint: a real HTTP server on loopback.

The shipped fake (``nexmdm_cli/fakefcm.py``, aiohttp) answers every send with success inside the
simulator's event loop; this one is threaded and scripted (errors per token or in sequence, delays, a
failing token endpoint) for the tests, so the two share only the service-account key file writer."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from nexmdm_cli import fakefcm as shipped_fake
from tests.support.fakes.server import LoopbackServer

PROJECT = "nexmdm-test"


@dataclass
class Received:
    path: str
    authorization: str
    body: dict[str, Any]
    at: float


@dataclass
class FakeFcm:
    messages: list[Received] = field(default_factory=list)
    token_requests: int = 0
    scripted: deque[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=deque)
    always: tuple[int, dict[str, Any], dict[str, str]] | None = None
    token_status: int = 200
    #: seconds before answering each send (a distant FCM; lets a test kill a worker mid-round)
    delay: float = 0.0
    #: a fixed response per registration token, before ``scripted`` and ``always``
    per_token: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, status: int, error_code: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Queue one response for the next send (an FCM-shaped error when ``error_code`` is given)."""
        self.scripted.append((status, error_body(status, error_code) if error_code else {}, headers or {}))

    def answer_token(
        self, token: str, status: int, error_code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Answer every send to ``token`` this way."""
        self.per_token[token] = (status, error_body(status, error_code) if error_code else {}, headers or {})

    def answer(self, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The response for the next send to ``token`` (call with the lock held)."""
        if token in self.per_token:
            return self.per_token[token]
        if self.scripted:
            return self.scripted.popleft()
        if self.always:
            return self.always
        return 200, {}, {}

    def sent_request_ids(self) -> list[str]:
        return [m.body["message"]["data"]["request_id"] for m in self.messages]

    def start(self) -> FakeFcm:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as FCM: the sender reuses its connections

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path == "/token":
                    with fake.lock:
                        fake.token_requests += 1
                        n = fake.token_requests
                    if fake.token_status != 200:
                        self._reply(fake.token_status, {"error": "invalid_grant"})
                        return
                    self._reply(200, {"access_token": f"access-{n}", "expires_in": 3600, "token_type": "Bearer"})
                    return
                if self.path != f"/v1/projects/{PROJECT}/messages:send":
                    self._reply(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
                    return
                body = json.loads(raw)
                with fake.lock:
                    fake.messages.append(Received(self.path, self.headers.get("Authorization", ""), body, time.time()))
                    n = len(fake.messages)
                    status, body, headers = fake.answer(body.get("message", {}).get("token"))
                if status == 200:
                    body = {"name": f"projects/{PROJECT}/messages/{n}"}
                if fake.delay:
                    time.sleep(fake.delay)
                self._reply(status, body, headers)

        class Server(LoopbackServer):
            request_queue_size = 512  # the default backlog of 5 refuses a worker's concurrent sends

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def error_body(status: int, error_code: str) -> dict[str, Any]:
    rpc_status = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }.get(status, "UNKNOWN")
    return {
        "error": {
            "code": status,
            "message": f"fake {error_code}",
            "status": rpc_status,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}],
        }
    }


def write_service_account(path: Path, token_uri: str) -> Path:
    """A freshly generated service-account key file pointing at the fake token endpoint (the shipped
    fake's writer, for this fake's project)."""
    return shipped_fake.write_service_account(path, token_uri, PROJECT)
