"""A local fake of FCM HTTP v1 and Google's OAuth token endpoint, on aiohttp.

Used by ``nexmdm simulate --fcm`` and ``nexmdm demo`` (in the simulator's own event loop, where each push
reaches the simulated device it names) and by ``make bench`` (in its own process, answering every send
after a fixed delay like a distant FCM: ``python -m nexmdm_cli.fakefcm --port P --delay-ms 50``).
It never talks to Google: it only answers on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

PROJECT = "nexmdm-sim"

#: called with (registration token, the message's ``data``) for every accepted send
OnMessage = Callable[[str, dict[str, Any]], None]


class FakeFcmServer:
    """FCM's ``messages:send`` and an OAuth ``/token`` endpoint; every send succeeds after ``delay`` seconds."""

    def __init__(self, *, delay: float = 0.0, project: str = PROJECT, on_message: OnMessage | None = None) -> None:
        self.delay = delay
        self.project = project
        self.on_message = on_message
        self.received = 0
        self.token_requests = 0
        #: pushes per request id (``GET /stats`` tells how many ids were pushed more than once)
        self.pushes: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post(f"/v1/projects/{self.project}/messages:send", self._send)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/reset", self._reset)
        return app

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "received": self.received,
                "request_ids": len(self.pushes),
                "pushed_twice_or_more": sum(1 for n in self.pushes.values() if n > 1),
                "token_requests": self.token_requests,
            }
        )

    async def _reset(self, _request: web.Request) -> web.Response:
        self.received = 0
        self.pushes.clear()
        return web.json_response({"reset": True})

    async def _token(self, request: web.Request) -> web.Response:
        await request.read()
        self.token_requests += 1
        return web.json_response(
            {"access_token": f"fake-access-{self.token_requests}", "expires_in": 3600, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received += 1
        message = body.get("message", {}) if isinstance(body, dict) else {}
        data = message.get("data") if isinstance(message, dict) else None
        if isinstance(data, dict) and "request_id" in data:
            self.pushes[str(data["request_id"])] += 1
        if self.on_message is not None and isinstance(message.get("data"), dict):
            self.on_message(str(message.get("token", "")), message["data"])
        return web.json_response({"name": f"projects/{self.project}/messages/{self.received}"})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def write_service_account(path: Path, token_uri: str, project: str = PROJECT) -> Path:
    """A freshly generated service-account key file whose ``token_uri`` is the fake's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "fake-key",
        "private_key": pem,
        "client_email": f"nexmdm@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake FCM HTTP v1 endpoint on loopback (benchmarks).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0, help="answer every send after this long")
    parser.add_argument("--project", default=PROJECT)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    fake = FakeFcmServer(delay=args.delay_ms / 1000, project=args.project)
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
