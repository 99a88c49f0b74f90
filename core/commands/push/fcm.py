"""An asyncio client for FCM's HTTP v1 API (aiohttp: one request per message, many in flight).

Credentials come from a service-account JSON file; OAuth2 access tokens are obtained (from the file's
``token_uri``) and cached by Google's own auth library, refreshed shortly before they expire (the
refresh runs in a thread: google-auth is synchronous). Each send is classified by FCM's error codes so
the delivery worker knows whether to retry, give up, pause every send (429 / 503), or mark a device's
registration token dead.

Why aiohttp: at 256 sends in flight against a fake FCM answering after 50 ms it made ~4,200 sends/s
(wrk: ~4,700/s in the same run), where ``httpx.AsyncClient`` made ~150/s (encode/httpx#3215); see
docs/performance.md.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.base.errors import InvalidArgument

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger("nexmdm.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

#: outcomes of one send
SENT = "sent"
RETRY = "retry"  # UNAVAILABLE, INTERNAL, QUOTA_EXCEEDED / 429, network trouble: try again later
UNREGISTERED = "unregistered"  # the registration token is dead: fail, mark the token, never retry
INVALID = "invalid"  # INVALID_ARGUMENT, SENDER_ID_MISMATCH...: fail at once
AUTH = "auth"  # our credentials were refused

_RETRY_CODES = {"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "UNSPECIFIED_ERROR"}
_PAUSE_CODES = {"QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
_AUTH_CODES = {"UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"}


@dataclass(frozen=True)
class SendResult:
    outcome: str
    message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    #: FCM asked every sender to slow down (429 QUOTA_EXCEEDED or 503): pause all sends, not just this one
    pause: bool = False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(status_code: int, body: Any, retry_after: str | None = None) -> SendResult:
    """Turn an FCM HTTP v1 error response into an outcome."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    code = None
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = detail["errorCode"]
            break
    code = code or (error.get("status") if isinstance(error, dict) else None) or f"HTTP_{status_code}"
    message = error.get("message") if isinstance(error, dict) else None
    text = f"{code}: {message}" if message else code
    wait = parse_retry_after(retry_after)
    if code == "UNREGISTERED":
        return SendResult(UNREGISTERED, error=text)
    if status_code == 401 or code in _AUTH_CODES:
        return SendResult(AUTH, error=text)
    if code in _RETRY_CODES or status_code == 429 or status_code >= 500:
        pause = status_code in (429, 503) or code in _PAUSE_CODES
        return SendResult(RETRY, error=text, retry_after=wait, pause=pause)
    return SendResult(INVALID, error=text)


class FcmClient:
    """Sends data messages through FCM HTTP v1 from one event loop (the delivery worker's).

    The HTTP session is opened on first use inside the running loop and keeps up to ``connections``
    connections to FCM; :meth:`aclose` closes it in the same loop.
    """

    def __init__(
        self,
        credentials_file: Path,
        *,
        project_id: str = "",
        endpoint: str = "https://fcm.googleapis.com",
        timeout: float = 10.0,
        connections: int = 256,
    ) -> None:
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account

        try:
            info = json.loads(Path(credentials_file).read_text())
            self.credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidArgument(
                f"NEXMDM_FCM_CREDENTIALS={credentials_file} is not a readable service-account JSON file: {exc}",
                field="fcm_credentials",
            ) from None
        self.project_id = project_id or info.get("project_id", "")
        if not self.project_id:
            raise InvalidArgument("no FCM project id: set NEXMDM_FCM_PROJECT_ID", field="fcm_project_id")
        self.url = f"{endpoint.rstrip('/')}/v1/projects/{self.project_id}/messages:send"
        # google-auth's transport waits 120 s by default: bound the token refresh like the sends
        self._auth_request = functools.partial(Request(), timeout=timeout)
        self.timeout = timeout
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._token_lock: asyncio.Lock | None = None

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp  # not at import time: the CLI starts without it

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False
            )
        return self._session

    async def access_token(self, *, force_refresh: bool = False) -> str:
        """A valid OAuth2 access token; one refresh at a time however many sends wait for it."""
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:
            if force_refresh or not self.credentials.valid:
                await asyncio.to_thread(self.credentials.refresh, self._auth_request)
            token: str = self.credentials.token
            return token

    async def send(
        self,
        *,
        token: str,
        data: dict[str, str],
        android: dict[str, Any] | None = None,
        force_refresh: bool = False,
    ) -> SendResult:
        """Send one data message to one registration token (``android``: FCM's AndroidConfig)."""
        import aiohttp
        from google.auth import exceptions as auth_exceptions

        try:
            access = await self.access_token(force_refresh=force_refresh)
        except auth_exceptions.TransportError as exc:
            return SendResult(RETRY, error=f"token endpoint unreachable: {exc.__class__.__name__}")
        except auth_exceptions.RefreshError as exc:
            return SendResult(AUTH, error=f"OAuth token refresh refused: {str(exc)[:200]}")
        message = {"message": {"token": token, "data": data, "android": android or {"priority": "high"}}}
        try:
            async with self._http().post(
                self.url, json=message, headers={"Authorization": f"Bearer {access}"}
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendResult(RETRY, error=f"FCM unreachable: {exc.__class__.__name__}")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if status == 200 and isinstance(body, dict) and body.get("name"):
            return SendResult(SENT, message_id=str(body["name"]))
        return classify(status, body, retry_after)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
