"""Who the client is behind a trusted proxy: uvicorn's ``ProxyHeadersMiddleware``, only ever with an address.

``NEXMDM_FORWARDED_ALLOW_IPS`` names the proxies whose ``X-Forwarded-For`` (and ``-Proto``) are believed;
uvicorn's middleware picks the client from the header (the last address a trusted proxy added). It takes
whatever text it finds there, though: from a trusted peer (loopback by default, a proxy that passes the
header through, or ``*``), a request with ``X-Forwarded-For: <70 characters>`` became a client "address"
that the failed-auth limiter keyed on and the audit trail could not store. Here the forwarded value is
used only when it is an IP address; otherwise the request keeps its peer's address.

``nexmdm serve`` runs uvicorn without its own proxy handling and the app applies this instead (the
peer's address is gone once uvicorn has replaced it).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from litestar.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

_PEER = "nexmdm.peer"


def address(host: str) -> str | None:
    """``host`` as an IPv4 or IPv6 address in its short form, or None (a zone, ``fe80::1%<anything>``,
    is no client of ours: it can be as long as the sender likes)."""
    if "%" in host:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class ForwardedClient:
    """ASGI middleware: the client from a trusted proxy's ``X-Forwarded-For`` when it is an address."""

    def __init__(self, app: ASGIApp, trusted: str) -> None:
        self.app = app
        self.proxy = ProxyHeadersMiddleware(self._checked, trusted_hosts=trusted)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[_PEER] = scope.get("client")
        await self.proxy(scope, receive, send)

    async def _checked(self, scope: Any, receive: Any, send: Any) -> None:
        peer = scope.pop(_PEER, None)
        client = scope.get("client")
        if client != peer and client:
            forwarded = address(client[0])
            # a trusted peer that sent something that is no address: the request keeps the peer's
            scope["client"] = (forwarded, client[1]) if forwarded else peer
        await self.app(scope, receive, send)
