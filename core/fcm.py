"""A client for FCM's HTTP v1 API.

Credentials come from a service-account JSON file; OAuth2 access tokens are obtained (from the file's
``token_uri``) and cached by Google's own auth library, refreshed shortly before they expire. Each send
is classified by FCM's error codes so the delivery worker knows whether to retry, give up, or mark a
device's registration token dead.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core.errors import InvalidArgument

logger = logging.getLogger("nexmdm.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

#: outcomes of one send
SENT = "sent"
RETRY = "retry"  # UNAVAILABLE, INTERNAL, QUOTA_EXCEEDED / 429, network trouble: try again later
UNREGISTERED = "unregistered"  # the registration token is dead: fail, mark the token, never retry
INVALID = "invalid"  # INVALID_ARGUMENT, SENDER_ID_MISMATCH...: fail at once
AUTH = "auth"  # our credentials were refused

_RETRY_CODES = {"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "UNSPECIFIED_ERROR"}
_AUTH_CODES = {"UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"}


@dataclass(frozen=True)
class SendResult:
    outcome: str
    message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None


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
        return SendResult(RETRY, error=text, retry_after=wait)
    return SendResult(INVALID, error=text)


class FcmClient:
    """Sends data messages through FCM HTTP v1. Thread-safe; one per process is enough."""

    def __init__(
        self,
        credentials_file: Path,
        *,
        project_id: str = "",
        endpoint: str = "https://fcm.googleapis.com",
        timeout: float = 10.0,
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
        self._http = httpx.Client(timeout=timeout)
        self._lock = threading.Lock()

    def access_token(self, *, force_refresh: bool = False) -> str:
        """A valid OAuth2 access token, refreshed by google-auth when missing or about to expire."""
        with self._lock:
            if force_refresh or not self.credentials.valid:
                self.credentials.refresh(self._auth_request)
            token: str = self.credentials.token
            return token

    def send(self, *, token: str, data: dict[str, str], force_refresh: bool = False) -> SendResult:
        """Send one data message to one registration token."""
        from google.auth import exceptions as auth_exceptions

        try:
            access = self.access_token(force_refresh=force_refresh)
        except auth_exceptions.TransportError as exc:
            return SendResult(RETRY, error=f"token endpoint unreachable: {exc.__class__.__name__}")
        except auth_exceptions.RefreshError as exc:
            return SendResult(AUTH, error=f"OAuth token refresh refused: {str(exc)[:200]}")
        message = {"message": {"token": token, "data": data, "android": {"priority": "high"}}}
        try:
            response = self._http.post(self.url, json=message, headers={"Authorization": f"Bearer {access}"})
        except httpx.HTTPError as exc:
            return SendResult(RETRY, error=f"FCM unreachable: {exc.__class__.__name__}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and body.get("name"):
            return SendResult(SENT, message_id=str(body["name"]))
        return classify(response.status_code, body, response.headers.get("Retry-After"))

    def close(self) -> None:
        self._http.close()
