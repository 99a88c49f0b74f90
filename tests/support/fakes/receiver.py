"""A webhook receiver written from docs/webhooks.md alone: a real HTTP server on loopback.

It verifies ``NexMDM-Signature`` exactly as the docs show (the ``verify`` function is copied from
there), keeps what it received, and answers with scripted statuses (to fail, then recover) or blocks
until released (a slow receiver). Hostile ones too: an answer with a huge body (``answer_bytes``, written
in 64 KiB pieces until the sender stops reading; ``written`` counts what got through), or one that
trickles its answer a byte every ``trickle_seconds``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.fakes.server import LoopbackServer


# ---- from docs/webhooks.md, "Verifying a delivery" (unchanged) ----
def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False  # too old (or from the future): a replay
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


# ---- end of the docs' code ----


@dataclass
class Delivery:
    event: str
    delivery: str
    signature: str
    body: bytes
    valid: bool
    host: str

    @property
    def document(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str = ""
    received: list[Delivery] = field(default_factory=list)
    #: requests that reached the handler (before it waits at ``gate``)
    arrived: int = 0
    scripted: deque[int] = field(default_factory=deque)
    status: int = 200
    gate: threading.Event | None = None
    #: answers by what was received (overrides ``scripted`` and ``status`` when it returns a status)
    respond: Callable[[Delivery], int | None] | None = None
    #: sent as the ``Location`` header of every answer (a receiver that redirects)
    location: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    #: a hostile answer: a body this long (0: none)
    answer_bytes: int = 0
    #: a hostile answer: one byte of the status line and headers every this many seconds (0: at once)
    trickle_seconds: float = 0.0
    #: bytes of the hostile answer the sender took (until it closed the connection)
    written: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> list[Delivery]:
        """Deliveries answered 2xx (a scripted failure is received but not accepted)."""
        return [d for d in self.received if getattr(d, "answered", 200) < 300]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.arrived += 1
                if receiver.gate is not None:
                    receiver.gate.wait(30)
                signature = self.headers.get("NexMDM-Signature", "")
                delivery = Delivery(
                    self.headers.get("NexMDM-Event", ""),
                    self.headers.get("NexMDM-Delivery", ""),
                    signature,
                    body,
                    verify(receiver.secret, signature, body),
                    self.headers.get("Host", ""),
                )
                with receiver.lock:
                    chosen = receiver.respond(delivery) if receiver.respond else None
                    if chosen is None:
                        chosen = receiver.scripted.popleft() if receiver.scripted else receiver.status
                    status = chosen
                    delivery.answered = status  # type: ignore[attr-defined]
                    receiver.received.append(delivery)
                if receiver.answer_bytes or receiver.trickle_seconds:
                    self.hostile_answer(status if delivery.valid else 400)
                    return
                self.send_response(status if delivery.valid else 400)
                if receiver.location is not None:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def hostile_answer(self, status: int) -> None:
                head = f"HTTP/1.1 {status} OK\r\nContent-Length: {receiver.answer_bytes}\r\n\r\n".encode()
                piece = b"x" * 65536
                try:
                    if receiver.trickle_seconds:
                        for i in range(len(head)):
                            self.wfile.write(head[i : i + 1])
                            self.wfile.flush()
                            with receiver.lock:
                                receiver.written += 1
                            time.sleep(receiver.trickle_seconds)
                    else:
                        self.wfile.write(head)
                    left = receiver.answer_bytes
                    while left > 0:
                        self.wfile.write(piece[:left])
                        with receiver.lock:
                            receiver.written += min(left, len(piece))
                        left -= len(piece)
                except OSError:  # the sender closed the connection: what it wanted to read, it read
                    pass
                self.close_connection = True

        self.server = LoopbackServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
