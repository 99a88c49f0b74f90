"""A deadline on reading a request's body (slowloris): 408 when it has not all arrived in time.

uvicorn waits for a body as long as its bytes trickle in, and an unauthenticated client can hold a
connection and a worker's attention with one byte every few seconds; an admin request whose key was
checked when its headers arrived could land its body minutes later. Every body must now arrive within
``NEXMDM_REQUEST_BODY_TIMEOUT_SECONDS`` of its headers, an APK upload (``multipart``) within
``NEXMDM_APK_UPLOAD_TIMEOUT_SECONDS``. Requests without a body are not touched, nor is anything the app
receives after the body (a streaming download listening for the client to go away).
"""

from __future__ import annotations

from typing import Any

import anyio

from nexmdm_api.errors import ApiError


def _has_body(scope: Any) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


class BodyDeadline:
    """ASGI middleware: the app's ``receive`` fails with 408 once the body's deadline has passed."""

    def __init__(self, app: Any, seconds: float, upload_seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.upload_seconds = upload_seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        upload = handler is not None and handler.opt.get("body") == "multipart"
        limit = self.upload_seconds if upload else self.seconds
        setting = "NEXMDM_APK_UPLOAD_TIMEOUT_SECONDS" if upload else "NEXMDM_REQUEST_BODY_TIMEOUT_SECONDS"
        deadline = anyio.current_time() + limit
        complete = False

        async def receive_in_time() -> Any:
            nonlocal complete
            if complete:
                return await receive()
            try:
                with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408, f"the request body did not arrive within {limit:g} s ({setting})", code="body_timeout"
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_in_time, send)
