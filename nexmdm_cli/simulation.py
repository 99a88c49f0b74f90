"""The load generator behind ``nexmdm simulate`` and ``nexmdm demo``: simulated devices over async httpx."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.errors import InvalidArgument
from nexmdm_cli.lazy import lazy_module

httpx = lazy_module("httpx")  # loaded when a simulation runs, not by `nexmdm --help`

NETWORKS = ("wifi", "wifi", "wifi", "cellular", "cellular", "ethernet")


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))]


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    beats_created: int = 0
    beats_deduplicated: int = 0
    commands_acked: int = 0
    enrolled: int = 0

    def record(self, endpoint: str, status: str, latency_ms: float | None) -> None:
        self.statuses.setdefault(endpoint, Counter())[status] += 1
        if latency_ms is not None:
            self.latencies.setdefault(endpoint, []).append(latency_ms)

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    def errors(self) -> Counter[str]:
        errors: Counter[str] = Counter()
        for counts in self.statuses.values():
            errors.update({s: n for s, n in counts.items() if not s.startswith("2")})
        return errors

    def report(self, elapsed: float, devices: int, enroll_s: float | None = None) -> dict[str, Any]:
        """The final report. Enrollment rates are over the enrollment phase, the rest over the run after it."""
        enroll_s = elapsed if enroll_s is None else enroll_s
        run_s = max(0.0, elapsed - enroll_s) or elapsed
        endpoints = {}
        for endpoint, counts in sorted(self.statuses.items()):
            values = self.latencies.get(endpoint, [])
            total = sum(counts.values())
            phase = enroll_s if endpoint == "POST /v1/enroll" else run_s
            endpoints[endpoint] = {
                "requests": total,
                "errors": sum(n for s, n in counts.items() if not s.startswith("2")),
                "throughput_rps": round(total / phase, 1) if phase else 0.0,
                "p50_ms": _round(percentile(values, 50)),
                "p95_ms": _round(percentile(values, 95)),
                "p99_ms": _round(percentile(values, 99)),
            }
        return {
            "devices": devices,
            "enrolled": self.enrolled,
            "elapsed_s": round(elapsed, 2),
            "enroll_s": round(enroll_s, 2),
            "requests": self.requests,
            "throughput_rps": round(self.requests / elapsed, 1) if elapsed else 0.0,
            "heartbeats": {"created": self.beats_created, "deduplicated": self.beats_deduplicated},
            "commands_acked": self.commands_acked,
            "errors_by_status": dict(sorted(self.errors().items())),
            "endpoints": endpoints,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def check_loopback(url: str) -> str:
    """The simulator only talks to this machine: it is a load generator, not a tool for other people's servers."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"--url must be an http(s) URL, got {url!r}", field="url")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidArgument("nexmdm simulate only targets this machine (localhost, 127.0.0.1, ::1)", field="url")
    return url.rstrip("/")


class Simulation:
    """N devices: enroll, then heartbeat with jitter and poll/ack pending commands until the deadline."""

    def __init__(
        self,
        url: str,
        enrollment_token: str,
        *,
        devices: int,
        duration: float,
        interval: float,
        concurrency: int = 16,
        poll_every: int = 2,
        prefix: str | None = None,
        ramp_up: float = 0.0,
    ) -> None:
        self.url = url
        self.enrollment_token = enrollment_token
        self.devices = devices
        self.duration = duration
        self.interval = interval
        self.poll_every = max(1, poll_every)
        self.ramp_up = max(0.0, ramp_up)
        self.prefix = prefix or f"sim-{secrets.token_hex(3)}"
        self.stats = Stats()
        self.rng = random.Random()  # noqa: S311 - jitter for a load generator, not a secret
        self.tokens: dict[str, str] = {}
        self._limit = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency

    async def _call(self, client: httpx.AsyncClient, endpoint: str, method: str, path: str, **kw: Any) -> Any:
        async with self._limit:
            started = time.perf_counter()
            try:
                response = await client.request(method, path, **kw)
            except httpx.HTTPError as exc:
                self.stats.record(endpoint, type(exc).__name__, None)
                return None
            self.stats.record(endpoint, str(response.status_code), (time.perf_counter() - started) * 1000)
            return response

    async def _enroll(self, client: httpx.AsyncClient, index: int) -> None:
        device_id = f"{self.prefix}-{index:04d}"
        body = {"device_id": device_id, "model": "Simulated Pixel", "os_version": "14", "agent_version": "sim-1.0"}
        response = await self._call(
            client,
            "POST /v1/enroll",
            "POST",
            "/v1/enroll",
            json=body,
            headers={"Authorization": f"Bearer {self.enrollment_token}"},
        )
        if response is not None and response.status_code == 201:
            self.tokens[device_id] = response.json()["device_token"]
            self.stats.enrolled += 1

    async def _device(
        self, client: httpx.AsyncClient, device_id: str, token: str, deadline: float, start_after: float = 0.0
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        battery = self.rng.randint(20, 100)
        network = self.rng.choice(NETWORKS)
        # ramp-up: device i comes online at i/n of the ramp; then a random phase within one interval
        first = start_after + self.rng.uniform(0, self.interval)
        await asyncio.sleep(max(0.0, min(first, deadline - time.monotonic())))
        beats = 0
        while time.monotonic() < deadline:
            battery = max(1, min(100, battery + self.rng.choice((-1, 0, 0, 1))))
            if self.rng.random() < 0.05:
                network = self.rng.choice(NETWORKS)
            beat = {
                "status": "ok",
                "battery_pct": battery,
                "plugged": battery > 90,
                "network_type": network,
                "agent_version": "sim-1.0",
            }
            response = await self._call(
                client, "POST /v1/heartbeat", "POST", "/v1/heartbeat", json=beat, headers=headers
            )
            if response is not None and response.status_code in (200, 201):
                if response.status_code == 201:
                    self.stats.beats_created += 1
                else:
                    self.stats.beats_deduplicated += 1
            beats += 1
            if beats % self.poll_every == 0:
                await self._poll(client, headers)
            pause = self.interval * self.rng.uniform(0.8, 1.2)
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    async def _poll(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        response = await self._call(client, "GET /v1/commands/pending", "GET", "/v1/commands/pending", headers=headers)
        if response is None or response.status_code != 200:
            return
        for command in response.json()["items"]:
            ack = await self._call(
                client,
                "POST /v1/commands/{id}/ack",
                "POST",
                f"/v1/commands/{command['request_id']}/ack",
                json={"status": "completed", "detail": "simulated"},
                headers=headers,
            )
            if ack is not None and ack.status_code == 200:
                self.stats.commands_acked += 1

    async def run(
        self,
        on_tick: Callable[[Simulation, float], None] | None = None,
        during: Callable[[Simulation], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=30.0) as client:
            started = time.monotonic()
            await asyncio.gather(*(self._enroll(client, i) for i in range(self.devices)))
            enrolled_at = time.monotonic()
            deadline = enrolled_at + self.duration
            n = max(1, len(self.tokens))
            tasks = [
                asyncio.create_task(self._device(client, d, t, deadline, self.ramp_up * i / n))
                for i, (d, t) in enumerate(self.tokens.items())
            ]
            if during is not None:
                tasks.append(asyncio.create_task(during(self)))
            ticker = asyncio.create_task(self._tick(on_tick, started, deadline)) if on_tick else None
            await asyncio.gather(*tasks)
            if ticker:
                ticker.cancel()
            return self.stats.report(time.monotonic() - started, self.devices, enroll_s=enrolled_at - started)

    async def _tick(self, on_tick: Callable[[Simulation, float], None], started: float, deadline: float) -> None:
        while True:
            on_tick(self, min(1.0, (time.monotonic() - started) / max(0.001, deadline - started)))
            await asyncio.sleep(0.25)
