"""The webhook sender: delivers the outbox at least once, in order per (endpoint, device), with backoff.

One round claims the due heads of the queues with a lease in one short transaction (``UPDATE ...
RETURNING``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so every server process can run a sender), commits,
POSTs without holding any lock, and records the outcome while the row is still pending. A row is due
only when no earlier row of its (endpoint, device) is still pending, so one device's events arrive in the
order they happened; a dead letter no longer holds its queue back. It runs in its own threads: a slow or
dead receiver delays only its own queue, never heartbeats or commands.

Targets are checked at delivery time, after DNS resolution, and the connection goes to the address that
was checked (the Host header and TLS SNI keep the name): a name that resolves to a loopback, link-local,
private or otherwise special address is refused unless ``NEXMDM_WEBHOOK_ALLOW_PRIVATE=true``, and a
DNS answer that changes between check and connect (rebinding) cannot slip through.

A receiver is never trusted to behave: one attempt ends at ``NEXMDM_WEBHOOK_TIMEOUT_SECONDS`` in total
(connect, send, headers and body together, however slowly it trickles; always well inside the lease, so
an event is never posted again while its first attempt still runs), and at most
``NEXMDM_WEBHOOK_RESPONSE_MAX_BYTES`` of its answer's body is read (a 300 MB answer used to be held in
memory whole).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
from sqlalchemy import Table, and_, exists, select, true, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from core.base.settings import Settings
from core.events.webhooks import sign
from core.models import WebhookEndpoint, WebhookOutbox
from core.storage.operations import rowcount
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.webhooks")
_OUTBOX: Table = WebhookOutbox.__table__  # type: ignore[assignment]
USER_AGENT = "NexMDM-Webhooks/1"


class Refused(Exception):
    """The target may not be delivered to (SSRF guard)."""


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def forbidden(address: str) -> str | None:
    """Why ``address`` is no place for a webhook, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    elif isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None:
        # 2002::/16 carries an IPv4 address that a 6to4 relay forwards to: judge that one
        embedded = forbidden(str(ip.sixtofour))
        return f"6to4 of a {embedded}" if embedded is not None else None
    for reason, test in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if test:
            return reason
    return None


def pin(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to connect to (host replaced by a checked address), the Host header and request extensions."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise Refused(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            reason = forbidden(address)
            if reason is not None:
                raise Refused(f"{host} resolves to {address}, a {reason} address (NEXMDM_WEBHOOK_ALLOW_PRIVATE)")
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), {"Host": host_header}, extensions


@dataclass(frozen=True)
class Claim:
    id: int
    endpoint_id: str
    event_id: str
    event_type: str
    body: str
    attempts: int
    url: str
    secret: str


class WebhookSender:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        resolver: Resolver = resolve,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        observer: Callable[[str], None] | None = None,
    ) -> None:
        self.sessions = session_factory
        #: told each recorded outcome (``delivered``, ``retry``, ``dead``): the API's metrics
        self.observer = observer
        self.settings = settings
        self.resolver = resolver
        self.clock = clock
        self.rng = rng
        #: one attempt's whole deadline is the timeout, a third of the lease at most
        self.lease = timedelta(seconds=max(30.0, settings.webhook_timeout_seconds * 3))
        self._tls = httpx.create_ssl_context()  # once: loading the CA bundle at every attempt is slow
        self._pool = ThreadPoolExecutor(max_workers=settings.webhook_concurrency, thread_name_prefix="webhook-send")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        #: deliveries in flight per endpoint (``run``)
        self._inflight: dict[str, int] = {}

    def close(self) -> None:
        """Stop without waiting for a stuck receiver: a delivery cut short is retried when its lease ends."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def claim(self, limit: int | None = None, *, busy: frozenset[str] = frozenset()) -> list[Claim]:
        """Lease the due heads of the queues (one row per endpoint and device at most), skipping ``busy`` endpoints."""
        now = self.clock()
        earlier = aliased(WebhookOutbox)
        due = (
            select(WebhookOutbox.id)
            .where(
                WebhookOutbox.status == "pending",
                WebhookOutbox.next_attempt_at <= now,
                (WebhookOutbox.lease_until.is_(None)) | (WebhookOutbox.lease_until < now),
                WebhookOutbox.endpoint_id.not_in(busy) if busy else true(),
                ~exists().where(
                    and_(
                        earlier.endpoint_id == WebhookOutbox.endpoint_id,
                        earlier.order_key == WebhookOutbox.order_key,
                        earlier.status == "pending",
                        earlier.id < WebhookOutbox.id,
                    )
                ),
            )
            .order_by(WebhookOutbox.id)
            .limit(limit or self.settings.webhook_concurrency * 4)
            .with_for_update(skip_locked=True, of=WebhookOutbox)  # PostgreSQL; SQLite's BEGIN IMMEDIATE serializes
        )
        if not self._anything_due(now):
            return []
        with self.sessions.begin() as db:
            ids = list(db.execute(due).scalars())
            if not ids:
                return []
            rows = db.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id.in_(ids), _OUTBOX.c.status == "pending")
                .values(lease_until=now + self.lease)
                .returning(
                    _OUTBOX.c.id,
                    _OUTBOX.c.event_id,
                    _OUTBOX.c.event_type,
                    _OUTBOX.c.body,
                    _OUTBOX.c.attempts,
                    _OUTBOX.c.endpoint_id,
                )
            ).all()
            endpoints = {
                e.id: (e.url, e.secret)
                for e in db.execute(
                    select(WebhookEndpoint).where(WebhookEndpoint.id.in_({r.endpoint_id for r in rows}))
                ).scalars()
            }
        return sorted(
            (
                Claim(r.id, r.endpoint_id, r.event_id, r.event_type, r.body, r.attempts, *endpoints[r.endpoint_id])
                for r in rows
                if r.endpoint_id in endpoints
            ),
            key=lambda c: c.id,
        )[: limit or len(rows)]

    def _anything_due(self, now: datetime) -> bool:
        """A read-only look first: an idle sender never takes SQLite's write lock (it polls every second)."""
        with self.sessions() as db:
            db.connection(execution_options={"sqlite_begin": "DEFERRED"})
            row = db.execute(
                select(_OUTBOX.c.id).where(_OUTBOX.c.status == "pending", _OUTBOX.c.next_attempt_at <= now).limit(1)
            ).first()
        return row is not None

    def send(self, claim: Claim) -> tuple[int | None, str | None]:
        """POST one delivery; returns (HTTP status or None, error or None). Never raises."""
        try:
            url, headers, extensions = pin(
                claim.url, allow_private=self.settings.webhook_allow_private, resolver=self.resolver
            )
        except Refused as exc:
            return None, f"refused: {exc}"
        timestamp = int(time.time())
        headers |= {
            "Content-Type": "application/json",
            "NexMDM-Event": claim.event_type,
            "NexMDM-Delivery": claim.event_id,
            "NexMDM-Signature": sign(claim.secret, timestamp, claim.body),
        }
        try:
            status = anyio.run(self._post, url, claim.body.encode(), headers, extensions)
        except TimeoutError:
            limit = self.settings.webhook_timeout_seconds
            return None, f"no complete answer within {limit:g} s (NEXMDM_WEBHOOK_TIMEOUT_SECONDS)"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= status < 300:
            return status, None
        return status, f"HTTP {status}"

    async def _post(self, url: str, body: bytes, headers: dict[str, str], extensions: dict[str, Any]) -> int:
        """POST under one total deadline (httpx's own timeouts are per read: a byte every few seconds kept
        one attempt alive for minutes) and read at most ``webhook_response_max_bytes`` of the answer."""
        limit = self.settings.webhook_response_max_bytes
        with anyio.fail_after(self.settings.webhook_timeout_seconds):
            async with (
                httpx.AsyncClient(
                    timeout=self.settings.webhook_timeout_seconds,
                    follow_redirects=False,
                    headers={"User-Agent": USER_AGENT},
                    verify=self._tls,
                ) as http,
                http.stream("POST", url, content=body, headers=headers, extensions=extensions) as response,
            ):
                received = 0
                async for chunk in response.aiter_raw():  # chunks of what arrived, 64 KiB at most each
                    received += len(chunk)
                    if received >= limit:
                        break  # the rest is never read: the connection is closed with the client
                return response.status_code

    def backoff(self, attempts: int) -> timedelta:
        """Exponential from ``webhook_backoff_seconds``, capped, with jitter (50-100 %)."""
        base = self.settings.webhook_backoff_seconds * (2 ** max(0, attempts - 1))
        return timedelta(seconds=min(base, self.settings.webhook_backoff_max_seconds) * (0.5 + self.rng() / 2))

    def record(self, claim: Claim, status_code: int | None, error: str | None) -> str:
        """Store the outcome: ``delivered``, ``retry`` or ``dead``."""
        now = self.clock()
        attempts = claim.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status_code": status_code, "lease_until": None}
        if error is None:
            outcome = "delivered"
            values |= {"status": "delivered", "finished_at": now, "last_error": None}
        elif attempts >= self.settings.webhook_max_attempts:
            outcome = "dead"
            values |= {"status": "dead", "finished_at": now, "last_error": error[:500]}
        else:
            outcome = "retry"
            values |= {"next_attempt_at": now + self.backoff(attempts), "last_error": error[:500]}
        with self.sessions.begin() as db:
            recorded = rowcount(
                db.execute(
                    update(_OUTBOX)
                    .where(
                        _OUTBOX.c.id == claim.id, _OUTBOX.c.status == "pending", _OUTBOX.c.attempts == claim.attempts
                    )
                    .values(**values)
                )
            )
        if recorded and self.observer is not None:  # not a row whose lease ran out and another sender took
            self.observer(outcome)
        if outcome != "delivered":
            logger.info("webhook %s to endpoint of %s: %s (%s)", claim.event_id, claim.event_type, outcome, error)
        return outcome

    def run_once(self) -> int:
        """One round: claim, send in parallel, record. Returns how many deliveries were attempted."""
        claims = self.claim()
        outcomes = list(self._pool.map(lambda c: self.record(c, *self.send(c)), claims))
        return len(outcomes)

    def _deliver(self, claim: Claim) -> None:
        try:
            self.record(claim, *self.send(claim))
        except Exception as exc:  # noqa: BLE001 - the lease runs out and another round retries it
            logger.warning("recording webhook %s failed: %s", claim.event_id, type(exc).__name__)
        finally:
            with self._lock:
                self._inflight[claim.endpoint_id] -= 1
                if not self._inflight[claim.endpoint_id]:
                    del self._inflight[claim.endpoint_id]
            self._wake.set()

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Keep every sender slot busy: claim as slots free up, never waiting for a whole round.

        One endpoint holds at most half the slots (at least one), so a dead receiver that times out
        every delivery slows only its own queues.
        """
        per_endpoint = max(1, self.settings.webhook_concurrency // 2)
        while not stop.is_set():
            self._wake.clear()
            with self._lock:
                free = self.settings.webhook_concurrency - sum(self._inflight.values())
                busy = frozenset(e for e, n in self._inflight.items() if n >= per_endpoint)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = self.claim(free, busy=busy)
                except Exception as exc:  # noqa: BLE001 - the sender must outlive a database hiccup
                    logger.warning(
                        "webhook claim failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    )
            taken: dict[str, int] = {}
            for claim in claims:
                if taken.get(claim.endpoint_id, 0) + self._inflight.get(claim.endpoint_id, 0) >= per_endpoint:
                    self._release(claim)  # over this endpoint's share: let the lease go at once
                    continue
                taken[claim.endpoint_id] = taken.get(claim.endpoint_id, 0) + 1
                with self._lock:
                    self._inflight[claim.endpoint_id] = self._inflight.get(claim.endpoint_id, 0) + 1
                self._pool.submit(self._deliver, claim)
            if not taken:
                self._wake.wait(poll_seconds)
            if stop.is_set():
                break

    def wake(self) -> None:
        """End ``run``'s wait at once (after its ``stop`` event was set, or when there is new work)."""
        self._wake.set()

    def _release(self, claim: Claim) -> None:
        with self.sessions.begin() as db:
            db.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id == claim.id, _OUTBOX.c.status == "pending", _OUTBOX.c.attempts == claim.attempts)
                .values(lease_until=None)
            )
