"""The load generator behind ``nexmdm simulate`` and ``nexmdm demo``: simulated devices over aiohttp.

The client must cost far less than the server it measures: ``httpx.AsyncClient`` with dozens of requests
in flight added its own ~1 s to the p99 at 10,000 devices (encode/httpx#3215), so the simulator uses
aiohttp, and can split the fleet over several processes (``--processes``). With a fake FCM
(``--fcm``), each device fetches and acknowledges its commands as soon as a push reaches it, and the
report adds the push and ack latency measured from each command's creation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import aiohttp  # this module is imported only when a simulation runs, never by `nexmdm --help`

from core.base.errors import InvalidArgument
from nexmdm_cli import sim_profiles
from nexmdm_cli import simulation_faults as faults
from nexmdm_cli.sim_inventory import SimInventory
from nexmdm_cli.sim_stats import ACKED, PUSHED, Stats

NETWORKS = ("wifi", "wifi", "wifi", "cellular", "cellular", "ethernet")


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
    """N devices: enroll, then heartbeat with jitter and poll/ack pending commands until the deadline.

    ``part``/``parts`` select this process's share of the fleet (device ``i`` belongs to part
    ``i % parts``). With ``fcm_port`` a fake FCM listens there; devices enroll with a registration token
    and fetch and acknowledge their commands on every push.
    """

    def __init__(
        self,
        url: str,
        enrollment_token: str,
        *,
        devices: int,
        duration: float,
        interval: float,
        concurrency: int = 64,
        poll_every: int = 2,
        prefix: str | None = None,
        ramp_up: float = 0.0,
        part: int = 0,
        parts: int = 1,
        fcm_port: int | None = None,
        app_update_chance: float = 0.02,
        fail_rules: tuple[faults.FailRule, ...] = (),
        preinstalled: Callable[[int], dict[str, int]] | None = None,
        builds: dict[int, tuple[str, int]] | None = None,
    ) -> None:
        self.url = url
        self.enrollment_token = enrollment_token
        self.devices = devices
        self.duration = duration
        self.interval = interval
        self.poll_every = max(1, poll_every)
        self.ramp_up = max(0.0, ramp_up)
        self.prefix = prefix or f"sim-{secrets.token_hex(3)}"
        self.part, self.parts = part, max(1, parts)
        self.fcm_port = fcm_port
        #: the chance, at each heartbeat, that a device updates one app and reports it (a PATCH)
        self.app_update_chance = app_update_chance
        self.stats = Stats()
        self.rng = random.Random()  # noqa: S311 - jitter for a load generator, not a secret
        self.tokens: dict[str, str] = {}
        #: request id → monotonic time just before its command was created (filled by whoever creates them)
        self.created: dict[str, float] = {}
        self._pushes: dict[str, asyncio.Queue[str]] = {}
        self.fail_rules = fail_rules
        #: device index -> apps (package -> version code) installed in its inventory before it enrolls
        self.preinstalled = preinstalled
        #: APK build id -> (package, version code) it installs (a real agent reads the APK's manifest)
        self.builds = builds or {}
        self.inventories: dict[str, SimInventory] = {}
        self._concurrency = concurrency
        self._limit: asyncio.Semaphore | None = None
        from nexmdm_cli.agent import SimulatedAgent

        self.agent = SimulatedAgent(self.rng)

    @staticmethod
    def fcm_token(device_id: str) -> str:
        return f"sim-fcm-{device_id}"

    async def _call(
        self, client: aiohttp.ClientSession, endpoint: str, method: str, path: str, **kw: Any
    ) -> tuple[int, Any] | None:
        """One request; returns (status, parsed JSON body or None), or None when no answer came."""
        assert self._limit is not None
        async with self._limit:
            started = time.perf_counter()
            try:
                async with client.request(method, self.url + path, **kw) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.record(endpoint, type(exc).__name__, None)
                return None
            self.stats.record(endpoint, str(status), (time.perf_counter() - started) * 1000)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    async def _enroll(self, client: aiohttp.ClientSession, index: int) -> None:
        device_id = f"{self.prefix}-{index:04d}"
        inventory = self.inventories[device_id] = SimInventory.for_device(device_id)
        for package, code in (self.preinstalled(index) if self.preinstalled else {}).items():
            inventory.install(package, code)
        hardware = inventory.device
        body = {
            "device_id": device_id,
            "model": hardware["model"],
            "os_version": hardware["os_version"],
            "agent_version": "sim-1.0",
        }
        if self.fcm_port is not None:
            body["fcm_token"] = self.fcm_token(device_id)
        answer = await self._call(
            client,
            "POST /v1/enroll",
            "POST",
            "/v1/enroll",
            json=body,
            headers={"Authorization": f"Bearer {self.enrollment_token}"},
        )
        if answer is not None and answer[0] == 201 and isinstance(answer[1], dict):
            self.tokens[device_id] = answer[1]["device_token"]
            self.stats.enrolled += 1

    def _pushed(self, token: str, data: dict[str, Any]) -> None:
        """The fake FCM accepted a push: hand it to its device."""
        device_id = token.removeprefix("sim-fcm-")
        request_id = str(data.get("request_id", ""))
        if request_id in self.created:
            self.stats.record(PUSHED, "200", (time.monotonic() - self.created[request_id]) * 1000)
        if (queue := self._pushes.get(device_id)) is not None:
            queue.put_nowait(request_id)

    async def _device(
        self, client: aiohttp.ClientSession, device_id: str, token: str, deadline: float, start_after: float = 0.0
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        inventory = self.inventories.get(device_id) or SimInventory.for_device(device_id)
        battery = self.rng.randint(20, 100)
        network = self.rng.choice(NETWORKS)
        pushes = self._pushes.setdefault(device_id, asyncio.Queue()) if self.fcm_port is not None else None
        # ramp-up: device i comes online at i/n of the ramp; then a random phase within one interval
        next_beat = time.monotonic() + start_after + self.rng.uniform(0, self.interval)
        beats = 0
        while time.monotonic() < deadline:
            wait = max(0.0, min(next_beat, deadline) - time.monotonic())
            if pushes is not None:
                try:
                    await asyncio.wait_for(pushes.get(), wait)
                except TimeoutError:
                    pass
                else:  # a push: fetch what is pending now, as the agent does on any push
                    await self._poll(client, headers, device_id, inventory)
                    continue
            else:
                await asyncio.sleep(wait)
            if time.monotonic() >= deadline:
                break
            battery = max(1, min(100, battery + self.rng.choice((-1, 0, 0, 1))))
            if self.rng.random() < 0.05:
                network = self.rng.choice(NETWORKS)
            beat = {
                "status": "ok",
                "battery_pct": battery,
                "plugged": battery > 90,
                "network_type": network,
                "agent_version": "sim-1.0",
                "inventory_hash": inventory.hash,
            }
            answer = await self._call(client, "POST /v1/heartbeat", "POST", "/v1/heartbeat", json=beat, headers=headers)
            if answer is not None and answer[0] == 201:
                self.stats.beats_created += 1
            elif answer is not None and answer[0] == 200:
                self.stats.beats_deduplicated += 1
            await self._follow(client, headers, device_id, inventory, None if answer is None else answer[1])
            beats += 1
            if beats % self.poll_every == 0:
                await self._poll(client, headers, device_id, inventory)
            next_beat = time.monotonic() + self.interval * self.rng.uniform(0.8, 1.2)

    async def _follow(
        self,
        client: aiohttp.ClientSession,
        headers: dict[str, str],
        device_id: str,
        inventory: SimInventory,
        body: Any,
    ) -> None:
        """What a heartbeat answer asks for: the whole inventory, a new profile applied; else, now and then, an
        app update. In lost mode, a location fix."""
        answer = body if isinstance(body, dict) else {}
        if answer.get("inventory") == "wanted":
            await self._report(client, headers, inventory)
        if isinstance(told := answer.get("profile"), str):
            self.stats.convergence.tell(told, device_id, time.monotonic())
        if body is not None and answer.get("profile") != inventory.profile:

            def judged(digest: str, state: str) -> None:
                self.stats.convergence.judged(digest, device_id, state, time.monotonic())

            await sim_profiles.fetch_and_apply(self._call, client, headers, inventory, self.fail_rules, judged)
        elif answer.get("inventory") != "wanted" and self.rng.random() < self.app_update_chance:
            await self._report_change(client, headers, inventory)
        if device_id in self.agent.lost:
            fix = self.agent.fix(device_id)
            await self._call(client, "POST /v1/location", "POST", "/v1/location", json=fix, headers=headers)

    async def _report(self, client: aiohttp.ClientSession, headers: dict[str, str], inventory: SimInventory) -> None:
        """``PUT /v1/inventory``: the whole inventory, as the protocol asks after ``"inventory": "wanted"``."""
        document = inventory.document()
        answer = await self._call(client, "PUT /v1/inventory", "PUT", "/v1/inventory", json=document, headers=headers)
        if answer is not None and answer[0] == 200:
            inventory.reported = document["hash"]

    async def _report_change(
        self, client: aiohttp.ClientSession, headers: dict[str, str], inventory: SimInventory
    ) -> None:
        """One app updated: ``PATCH`` on the last reported hash; a 409 (another base) sends it whole."""
        delta = inventory.update_one()
        if delta is None:
            return
        answer = await self._call(client, "PATCH /v1/inventory", "PATCH", "/v1/inventory", json=delta, headers=headers)
        if answer is not None and answer[0] == 200:
            inventory.reported = delta["hash"]
        elif answer is not None and answer[0] == 409:
            await self._report(client, headers, inventory)

    async def _poll(
        self, client: aiohttp.ClientSession, headers: dict[str, str], device_id: str, inventory: SimInventory
    ) -> None:
        answer = await self._call(client, "GET /v1/commands/pending", "GET", "/v1/commands/pending", headers=headers)
        if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
            return
        for command in answer[1]["items"]:
            request_id = command["request_id"]
            code = faults.failure(self.fail_rules, inventory.device, command["action"])
            install = faults.installed(command, self.builds) if code is None else None
            if code is not None:
                body: dict[str, Any] = {"status": "failed", "error_code": code, "detail": code}
            else:
                body = self.agent.execute(device_id, command)
                if install is not None and body["status"] == "completed":  # what the build's manifest says
                    body["result"] = {"package": install[0], "version_code": install[1]}
            ack = await self._call(
                client,
                "POST /v1/commands/{id}/ack",
                "POST",
                f"/v1/commands/{request_id}/ack",
                json=body,
                headers=headers,
            )
            if (
                install is not None and ack is not None and ack[0] == 200
            ):  # the new version is in the device's inventory: it reports it at once, then its profile's items
                inventory.install(*install)
                await self._report(client, headers, inventory)
                inventory.profile = None  # (an item's state changed: the next heartbeat reports the profile again)
            if ack is not None and ack[0] == 200:
                self.stats.commands_acked += 1
                if request_id in self.created:
                    self.stats.record(ACKED, "200", (time.monotonic() - self.created[request_id]) * 1000)

    async def run(
        self,
        on_tick: Callable[[Simulation, float], None] | None = None,
        during: Callable[[Simulation], Coroutine[Any, Any, None]] | None = None,
    ) -> dict[str, Any]:
        self._limit = asyncio.Semaphore(self._concurrency)
        fake = None
        if self.fcm_port is not None:
            from nexmdm_cli.fakefcm import FakeFcmServer

            fake = FakeFcmServer(on_message=self._pushed)
            await fake.start(port=self.fcm_port)
        connector = aiohttp.TCPConnector(limit=self._concurrency)
        timeout = aiohttp.ClientTimeout(total=30.0)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
                return await self._run(client, on_tick, during)
        finally:
            if fake is not None:
                await fake.stop()

    async def _run(
        self,
        client: aiohttp.ClientSession,
        on_tick: Callable[[Simulation, float], None] | None,
        during: Callable[[Simulation], Coroutine[Any, Any, None]] | None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        mine = range(self.part, self.devices, self.parts)
        await asyncio.gather(*(self._enroll(client, i) for i in mine))
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
        return self.stats.report(
            time.monotonic() - started, self.devices, enroll_s=enrolled_at - started, started=started
        )

    async def _tick(self, on_tick: Callable[[Simulation, float], None], started: float, deadline: float) -> None:
        while True:
            on_tick(self, min(1.0, (time.monotonic() - started) / max(0.001, deadline - started)))
            await asyncio.sleep(0.25)
