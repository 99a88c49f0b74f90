"""``POST /v1/heartbeat``: the hottest path. Authenticate, store, answer; nothing else.

On PostgreSQL the handler never leaves the event loop: it validates the beat and awaits the process's
heartbeat writer, which stores the beats arriving together with one statement (``heartbeat_writer``).
On SQLite it is the same work in a worker thread, in the request's transaction. ``create_app`` mounts
the controller that fits the database; both answer the same way.
"""

from __future__ import annotations

from typing import Any

import litestar
import msgspec
from litestar import Controller, Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from core.base import security
from core.base.errors import InvalidCredentials
from core.heartbeats import store as heartbeats
from nexmdm_api.auth import DEVICE_SECURITY, bearer_token, refused, refused_async
from nexmdm_api.db import DB
from nexmdm_api.errors import problems, rate_limited
from nexmdm_api.metrics import count_heartbeat
from nexmdm_api.routes.base import post
from nexmdm_api.schemas import HeartbeatIn, HeartbeatOut

_ROUTE: dict[str, Any] = {
    "summary": "Report a heartbeat",
    "description": (
        "Stores at most one heartbeat per device per bucket (server receive time). 201 when this heartbeat "
        "opened a new bucket, 200 when the bucket already had one (nothing stored). `fcm_token` updates the "
        "device's push token either way. `inventory` is `wanted` when the server holds another inventory than "
        "`inventory_hash` (or none): the device then sends it (`PUT /v1/inventory`). `profile` is the device's "
        "effective profile hash (absent when no profile matches it): another one than it applied means "
        "`GET /v1/profile`. Unknown fields are ignored."
    ),
    "status_code": 201,
    # one name whichever handler the database gets (Litestar would derive it from the function's name)
    "operation_id": "V1HeartbeatHeartbeat",
    "security": DEVICE_SECURITY,
    "responses": {
        200: ResponseSpec(HeartbeatOut, description="The bucket already had a heartbeat; nothing was stored"),
        **problems(400, 401, 403, 413, 415, 422, 429, 503),
    },
}


def _take_rate(request: Request[Any, Any, Any]) -> str:
    token = bearer_token(request) or ""
    # keyed by the token's hash, before the database: a flood costs no query (a device has one token)
    return _limited(token, request.app.state.heartbeat_limiter.take(security.hash_secret(token)))


async def _take_rate_async(request: Request[Any, Any, Any]) -> str:
    token = bearer_token(request) or ""
    # on the event loop: with Redis the decision is awaited, never blocking other requests
    return _limited(token, await request.app.state.heartbeat_limiter.take_async(security.hash_secret(token)))


def _limited(token: str, wait: float | None) -> str:
    if wait is not None:
        count_heartbeat("rate_limited")
        raise rate_limited("too many heartbeats from this device", wait)
    return token


def _answer(result: dict[str, Any]) -> Response[HeartbeatOut]:
    count_heartbeat("created" if result["created"] else "deduplicated")
    return Response(
        HeartbeatOut(
            created=result["created"],
            bucket_start=result["bucket_start"],
            inventory="wanted" if result.get("inventory_wanted") else None,
            profile=result.get("profile"),
        ),
        status_code=201 if result["created"] else 200,
    )


class _Heartbeats(Controller):
    """What both heartbeat controllers share; ``create_app`` registers one of them."""

    path = "/v1/heartbeat"
    tags = ["device"]


class BatchedHeartbeatController(_Heartbeats):
    """PostgreSQL's heartbeat."""

    @litestar.post(**_ROUTE, opt={"auth": "device", "body": "json"})
    async def heartbeat_batched(
        self, request: Request[Any, Any, Any], data: JSONBody[HeartbeatIn]
    ) -> Response[HeartbeatOut]:
        """PostgreSQL: validated on the event loop, stored by the process's heartbeat writer (group commit)."""
        token = await _take_rate_async(request)
        beat = heartbeats.prepare_beat(token, msgspec.structs.asdict(data), request.app.state.settings)
        try:
            result = await request.app.state.heartbeat_writer.store(beat)
        except InvalidCredentials as exc:
            raise await refused_async(request, exc.message) from None
        return _answer(result)


class HeartbeatController(_Heartbeats):
    """SQLite's heartbeat."""

    @post(**_ROUTE, opt={"auth": "device", "body": "json", "autocommit": True})
    def heartbeat(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[HeartbeatIn]) -> Response[HeartbeatOut]:
        """SQLite: in a worker thread, in the request's transaction (one writer at a time anyway)."""
        token = _take_rate(request)
        try:
            result = heartbeats.record_heartbeat_for_token(
                db, token=token, heartbeat_data=msgspec.structs.asdict(data), settings=request.app.state.settings
            )
        except InvalidCredentials as exc:
            raise refused(request, exc.message) from None
        return _answer(result)
