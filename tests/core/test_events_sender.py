"""Webhook delivery against a real receiver on loopback, on SQLite and PostgreSQL.

Retries are driven by a fake clock: the sender decides what is due by its clock, so backoff needs no
sleeping; the receiver and the HTTP calls are real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands import dispatches
from core.enrollment import enroll as enrollment
from core.events import webhooks
from core.events.sender import Refused, WebhookSender, forbidden, pin
from core.models import WebhookOutbox
from core.storage.types import utcnow
from tests.support.databases import add_device
from tests.support.fakes.receiver import Receiver


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    fake = Receiver().start()
    yield fake
    fake.stop()


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.with_overrides(
        webhook_allow_private=True, webhook_max_attempts=3, webhook_backoff_seconds=10, webhook_timeout_seconds=5
    )


def make_sender(factory: sessionmaker[Session], settings: Settings, clock: Clock) -> WebhookSender:
    return WebhookSender(factory, settings, clock=clock, rng=lambda: 1.0)


def subscribe(factory: sessionmaker[Session], receiver: Receiver, *events: str) -> str:
    with factory.begin() as db:
        secret, endpoint = webhooks.add_endpoint(db, url=receiver.url, events=list(events))
    receiver.secret = secret
    return endpoint["id"]


def outbox(factory: sessionmaker[Session]) -> list[WebhookOutbox]:
    with factory() as db:
        return list(db.execute(select(WebhookOutbox).order_by(WebhookOutbox.id)).scalars())


def test_signed_delivery_verified_by_a_receiver_written_from_the_docs(session_factory, hook_settings, receiver) -> None:
    subscribe(session_factory, receiver, "device.revoked", "command.failed")
    add_device(session_factory, "dev_a")
    with session_factory.begin() as db:
        dispatches.create_command(
            db, hook_settings, request_id="c1", device_id="dev_a", action="lock", payload={"message": "1234"}
        )
        dispatches.ack_command(db, device_id="dev_a", request_id="c1", status="failed", detail="secret detail")
        enrollment.revoke_device(db, "dev_a")
    sender = make_sender(session_factory, hook_settings, Clock())
    try:
        assert sender.run_once() == 1  # one head per (endpoint, device): the revocation waits its turn
        assert sender.run_once() == 1
        assert sender.run_once() == 0
    finally:
        sender.close()
    assert [d.event for d in receiver.received] == ["command.failed", "device.revoked"]
    assert all(d.valid for d in receiver.received)
    first = receiver.received[0]
    document = first.document
    assert first.delivery == document["id"] and document["type"] == "command.failed"
    assert document["data"]["request_id"] == "c1" and len(document["data"]["payload_hash"]) == 64
    assert b"1234" not in first.body and b"secret detail" not in first.body
    assert first.host.startswith("127.0.0.1:")
    assert {row.status for row in outbox(session_factory)} == {"delivered"}
    # a tampered body or an old timestamp fails the docs' check
    from tests.support.fakes.receiver import verify

    assert not verify(receiver.secret, first.signature, first.body + b" ")
    t = int(first.signature.split(",")[0][2:])
    old = webhooks.sign(receiver.secret, t - 301, first.body.decode())
    assert not verify(receiver.secret, old, first.body)


def test_retries_until_the_receiver_recovers_with_the_same_delivery_id(session_factory, hook_settings, receiver):
    subscribe(session_factory, receiver, "device.revoked")
    add_device(session_factory, "dev_a")
    with session_factory.begin() as db:
        enrollment.revoke_device(db, "dev_a")
    receiver.scripted.extend([500, 503])
    clock = Clock()
    sender = make_sender(session_factory, hook_settings, clock)
    try:
        assert sender.run_once() == 1
        assert sender.run_once() == 0  # backing off: nothing due yet
        clock.advance(10)
        assert sender.run_once() == 1
        clock.advance(19)
        assert sender.run_once() == 0  # second backoff is 20 s
        clock.advance(1)
        assert sender.run_once() == 1
    finally:
        sender.close()
    assert [d.answered for d in receiver.received] == [500, 503, 200]  # type: ignore[attr-defined]
    assert len({d.delivery for d in receiver.received}) == 1
    [row] = outbox(session_factory)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 3, 200)


def test_dead_letter_then_redelivery(session_factory, hook_settings, receiver) -> None:
    endpoint_id = subscribe(session_factory, receiver, "device.revoked")
    add_device(session_factory, "dev_a")
    add_device(session_factory, "dev_b")
    with session_factory.begin() as db:
        enrollment.revoke_device(db, "dev_a")
    receiver.status = 500
    clock = Clock()
    sender = make_sender(session_factory, hook_settings, clock)
    try:
        for _ in range(3):
            sender.run_once()
            clock.advance(3600)
        [row] = outbox(session_factory)
        assert (row.status, row.attempts, row.last_error) == ("dead", 3, "HTTP 500")
        with session_factory() as db:
            failed = webhooks.list_deliveries(db, endpoint_id=endpoint_id, failed=True)
            assert [d["status"] for d in failed] == ["dead"]
        # a dead letter does not hold its device's queue back
        receiver.status = 200
        with session_factory.begin() as db:
            enrollment.revoke_device(db, "dev_b")
        assert sender.run_once() == 1
        with session_factory.begin() as db:
            webhooks.redeliver(db, row.id)
        assert sender.run_once() == 1
    finally:
        sender.close()
    events = [json.loads(d.body)["data"]["device_id"] for d in receiver.received]
    assert events == ["dev_a"] * 3 + ["dev_b", "dev_a"]
    assert receiver.received[-1].delivery == receiver.received[0].delivery
    assert {row.status for row in outbox(session_factory)} == {"delivered"}


def test_order_is_kept_per_device_not_globally(session_factory, hook_settings, receiver) -> None:
    subscribe(session_factory, receiver, "device.enrolled", "device.revoked")
    add_device(session_factory, "dev_a")
    add_device(session_factory, "dev_b")
    with session_factory.begin() as db:
        webhooks.emit(db, "device.enrolled", {"device_id": "dev_a"}, device_id="dev_a")
        webhooks.emit(db, "device.enrolled", {"device_id": "dev_b"}, device_id="dev_b")
        enrollment.revoke_device(db, "dev_a")
    failures = iter([500])  # dev_a's first event fails once

    def respond(delivery):
        return next(failures, None) if delivery.document["data"]["device_id"] == "dev_a" else None

    receiver.respond = respond
    clock = Clock()
    sender = make_sender(session_factory, hook_settings, clock)
    try:
        assert sender.run_once() == 2  # the heads of both queues
        assert sender.run_once() == 0  # dev_a's revocation waits behind its failed enrollment
        clock.advance(10)
        assert sender.run_once() == 1
        assert sender.run_once() == 1
    finally:
        sender.close()
    accepted = [(d.event, d.document["data"]["device_id"]) for d in receiver.accepted()]
    assert accepted.index(("device.enrolled", "dev_a")) < accepted.index(("device.revoked", "dev_a"))


def test_ssrf_targets_are_refused_after_resolution(session_factory, settings, receiver) -> None:
    strict = settings.with_overrides(webhook_max_attempts=1)
    for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
        with session_factory.begin() as db:
            webhooks.add_endpoint(db, url=url, events=["device.revoked"])
    add_device(session_factory, "dev_a")
    with session_factory.begin() as db:
        enrollment.revoke_device(db, "dev_a")
    sender = WebhookSender(session_factory, strict)
    try:
        assert sender.run_once() == 2
    finally:
        sender.close()
    assert receiver.received == []
    rows = outbox(session_factory)
    assert {r.status for r in rows} == {"dead"}
    assert all(r.last_error.startswith("refused:") and "loopback" in r.last_error for r in rows)


def test_redirects_are_never_followed(session_factory, hook_settings, receiver) -> None:
    """A 307 to another address is a failed delivery, and nothing reaches that address: following it would
    skip the SSRF check and the pinned address."""
    elsewhere = Receiver().start()
    try:
        subscribe(session_factory, receiver, "device.revoked")
        elsewhere.secret = receiver.secret
        receiver.status, receiver.location = 307, elsewhere.url
        add_device(session_factory, "dev_a")
        with session_factory.begin() as db:
            enrollment.revoke_device(db, "dev_a")
        sender = make_sender(session_factory, hook_settings, Clock())
        try:
            assert sender.run_once() == 1
        finally:
            sender.close()
        assert receiver.arrived == 1 and elsewhere.arrived == 0
        (row,) = outbox(session_factory)
        assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("pending", 1, 307, "HTTP 307")
    finally:
        elsewhere.stop()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("fd00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        # IPv4-mapped IPv6: judged by the IPv4 address, with its reason (not "private" for the whole ::ffff:0:0/96)
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:8.8.8.8", None),
        ("0.0.0.0", "private"),
        ("100.64.0.1", "not globally routable"),
        ("224.0.0.1", "multicast"),
        ("8.8.8.8", None),
    ],
)
def test_forbidden_addresses(address: str, reason: str | None) -> None:
    assert forbidden(address) == reason


def test_the_connection_goes_to_the_checked_address() -> None:
    """No rebinding: a name is resolved once, checked, and the request is pinned to that address."""
    answers = iter([["93.184.215.14"], ["10.0.0.5"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    url, headers, extensions = pin("https://hooks.example.com/in?x=1", allow_private=False, resolver=rebinding)
    assert url == "https://93.184.215.14/in?x=1"
    assert headers == {"Host": "hooks.example.com"} and extensions == {"sni_hostname": "hooks.example.com"}
    with pytest.raises(Refused, match="private"):
        pin("https://hooks.example.com/in", allow_private=False, resolver=rebinding)
    with pytest.raises(Refused, match="link-local"):
        pin("http://metadata.internal/", allow_private=False, resolver=lambda h, p: ["8.8.8.8", "169.254.169.254"])
    assert pin("http://[::1]:8080/x", allow_private=True, resolver=lambda h, p: ["::1"])[0] == "http://[::1]:8080/x"


def test_bad_endpoints_are_refused(session_factory) -> None:
    from core.base.errors import InvalidArgument

    with session_factory.begin() as db:
        for url, events in (
            ("ftp://example.com/x", ["device.offline"]),
            ("https://user:pw@example.com/", ["device.offline"]),
            ("https://example.com/ x", ["device.offline"]),
            ("https://example.com/", []),
            ("https://example.com/", ["device.exploded"]),
        ):
            with pytest.raises(InvalidArgument):
                webhooks.add_endpoint(db, url=url, events=events)
        with pytest.raises(InvalidArgument):
            webhooks.add_endpoint(db, url="https://example.com/", events=["device.offline"], secret="short")


def test_a_stuck_receiver_does_not_starve_the_others(session_factory, hook_settings) -> None:
    import threading

    stuck, healthy = Receiver(gate=threading.Event()).start(), Receiver().start()
    try:
        subscribe(session_factory, stuck, "device.revoked")
        stuck_secret = stuck.secret
        subscribe(session_factory, healthy, "device.revoked")
        stuck.secret = stuck_secret
        for i in range(4):
            add_device(session_factory, f"dev_{i}")
            with session_factory.begin() as db:
                enrollment.revoke_device(db, f"dev_{i}")
        sender = WebhookSender(session_factory, hook_settings.with_overrides(webhook_concurrency=2))
        stop = threading.Event()
        runner = threading.Thread(target=sender.run, args=(stop, 0.05), daemon=True)
        runner.start()
        deadline = time.monotonic() + 20
        while len(healthy.received) < 4:
            assert time.monotonic() < deadline, f"healthy receiver got {len(healthy.received)}"
            time.sleep(0.05)
        assert stuck.arrived == 1  # at most its share of the slots (one of two)
        assert all(d.valid for d in healthy.received)
        stuck.gate.set()
        while len(stuck.received) < 4:
            assert time.monotonic() < deadline, f"stuck receiver got {len(stuck.received)}"
            time.sleep(0.05)
        stop.set()
        runner.join(5)
        sender.close()
    finally:
        stuck.stop()
        healthy.stop()


def test_malformed_urls_are_invalid_arguments(session_factory) -> None:
    from core.base.errors import InvalidArgument

    with session_factory.begin() as db:
        for url in ("http://[::1/x", "http://example.com:99999/", "http://example.com:port/"):
            with pytest.raises(InvalidArgument):
                webhooks.add_endpoint(db, url=url, events=["device.offline"])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:0a00:0001::1", "6to4 of a private"),  # 10.0.0.1
        ("2002:c0a8:0001::", "6to4 of a private"),  # 192.168.0.1
        ("2002:7f00:0001::1", "6to4 of a loopback"),  # 127.0.0.1
        ("2002:a9fe:a9fe::1", "6to4 of a link-local"),  # 169.254.169.254, the cloud metadata service
        ("2002:6440:0001::1", "6to4 of a not globally routable"),  # 100.64.0.1
        ("2002:0808:0808::1", None),  # 8.8.8.8: a public address behind a 6to4 relay stays allowed
    ],
)
def test_6to4_addresses_are_judged_by_the_ipv4_address_they_carry(address: str, reason: str | None) -> None:
    """Python calls 2002::/16 global: a name resolving to 2002:0a00:0001:: reached 10.0.0.1 through a relay."""
    assert forbidden(address) == reason
    if reason is not None:
        with pytest.raises(Refused, match=reason):
            pin("https://hooks.example.com/in", allow_private=False, resolver=lambda h, p: [address])


def _one_delivery(session_factory: sessionmaker[Session], receiver: Receiver) -> None:
    subscribe(session_factory, receiver, "device.revoked")
    add_device(session_factory, "dev_a")
    with session_factory.begin() as db:
        enrollment.revoke_device(db, "dev_a")


def test_a_huge_answer_is_never_read_whole(session_factory, hook_settings) -> None:
    """A receiver answering 300 MB took the server from 108 MB to 724 MB: the whole body was read."""
    import tracemalloc

    huge = Receiver(answer_bytes=128 * 1024 * 1024).start()
    _one_delivery(session_factory, huge)
    sender = make_sender(session_factory, hook_settings, Clock())
    try:
        tracemalloc.start()
        try:
            assert sender.run_once() == 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        sender.close()
        huge.stop()
    (row,) = outbox(session_factory)
    assert row.status == "delivered" and row.last_status_code == 200
    # what the kernel's socket buffers took is all that was sent; the sender kept a few KiB of it
    assert huge.written < 32 * 1024 * 1024, huge.written
    assert peak < 8 * 1024 * 1024, peak


def test_a_trickling_receiver_is_cut_off_at_the_total_deadline(session_factory, hook_settings) -> None:
    """A byte every 5 s held one attempt 70 s against a 10 s timeout (httpx's timeouts are per read), and
    once the 30 s lease ran out the same event was posted again while the first attempt still ran."""
    slow = Receiver(trickle_seconds=0.25).start()  # its ~40-byte answer would take ~10 s
    settings = hook_settings.with_overrides(webhook_timeout_seconds=1.0)
    _one_delivery(session_factory, slow)
    sender = make_sender(session_factory, settings, Clock())
    try:
        started = time.monotonic()
        assert sender.run_once() == 1
        took = time.monotonic() - started
    finally:
        sender.close()
        slow.stop()
    assert took < 3.0, took
    (row,) = outbox(session_factory)
    assert row.status == "pending" and row.attempts == 1 and row.lease_until is None
    assert "NEXMDM_WEBHOOK_TIMEOUT_SECONDS" in row.last_error
    assert sender.lease.total_seconds() >= 3 * settings.webhook_timeout_seconds  # the attempt ends inside its lease
