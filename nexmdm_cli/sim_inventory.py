"""The simulated devices' inventories (``nexmdm simulate``, the reference agent; docs/device-protocol.md).

A seeded catalogue of packages; each device draws 50–300 of them (seeded by its id, so a device keeps the
same apps across runs), reports them whole when a heartbeat answer says ``"inventory": "wanted"``, and
now and then updates one app and reports the change as a ``PATCH`` on its last hash.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from core.inventory.document import canonical_hash

CATALOGUE_SEED = 20261207
CATALOGUE_SIZE = 600
VENDORS = ("acme", "globex", "initech", "umbrella", "hooli", "wonka", "stark", "wayne", "tyrell", "cyberdyne")
WORDS = ("pos", "scanner", "notes", "mail", "maps", "chat", "shop", "pay", "time", "docs", "print", "camera")
MODELS = (
    ("samsung", "Galaxy A10", 30, "11"),
    ("samsung", "Galaxy XCover 6", 34, "14"),
    ("Google", "Pixel 8", 34, "14"),
    ("Zebra", "TC52", 33, "13"),
    ("Honeywell", "CT40", 31, "12"),
)


def catalogue() -> list[tuple[str, int]]:
    """``(package, base version code)`` for every package a simulated device may carry (always the same)."""
    rng = random.Random(CATALOGUE_SEED)  # noqa: S311 - test data, not a secret
    names: dict[str, int] = {}
    while len(names) < CATALOGUE_SIZE:
        name = f"com.{rng.choice(VENDORS)}.{rng.choice(WORDS)}{rng.randint(1, 99)}"
        names.setdefault(name, rng.randint(1, 5000) * 10)
    return sorted(names.items())


_CATALOGUE = catalogue()


def _app(package: str, code: int) -> dict[str, Any]:
    return {
        "package": package,
        "version_code": code,
        "version_name": f"{code // 1000}.{code // 10 % 100}.{code % 10}",
        "installer": "com.android.vending",
        "system": package.endswith(("1", "2")),
        "enabled": True,
    }


@dataclass
class SimInventory:
    """One simulated device's inventory, and the hash it last reported (``None``: never accepted)."""

    device: dict[str, Any]
    apps: dict[str, dict[str, Any]]
    reported: str | None = None
    rng: random.Random = field(default_factory=random.Random)
    #: the effective profile hash it last applied and reported (``nexmdm_cli.sim_profiles``)
    profile: str | None = None

    @classmethod
    def for_device(cls, device_id: str) -> SimInventory:
        rng = random.Random(f"{CATALOGUE_SEED}:{device_id}")  # noqa: S311 - test data, not a secret
        manufacturer, model, api_level, os_version = rng.choice(MODELS)
        device = {
            "manufacturer": manufacturer,
            "model": model,
            "os_version": os_version,
            "api_level": api_level,
            "security_patch": f"2026-{rng.randint(1, 11):02d}-01",
            "storage_total_mb": 65536,
            "storage_free_mb": rng.randint(500, 30000),
            "ram_mb": rng.choice((2048, 3072, 4096, 6144)),
            "agent_version": "sim-1.0",
        }
        chosen = rng.sample(_CATALOGUE, rng.randint(50, 300))
        apps = {package: _app(package, base + rng.choice((0, 0, 0, 10, 20))) for package, base in chosen}
        return cls(device, apps, rng=rng)

    @property
    def hash(self) -> str:
        return canonical_hash(self.device, self.apps)

    def document(self) -> dict[str, Any]:
        """The ``PUT /v1/inventory`` body."""
        return {"hash": self.hash, "device": self.device, "apps": list(self.apps.values())}

    def install(self, package: str, version_code: int) -> None:
        """Install (or update to) ``version_code`` of ``package``, as a completed ``install_apk`` does."""
        self.apps[package] = _app(package, version_code)

    def update_one(self) -> dict[str, Any] | None:
        """Update one app (a new version code) and return the ``PATCH`` body on the reported hash; ``None``
        when nothing was reported yet (the next answer asks for the whole inventory anyway)."""
        if self.reported is None:
            return None
        package = self.rng.choice(sorted(self.apps))
        updated = _app(package, self.apps[package]["version_code"] + 10)
        self.apps[package] = updated
        return {"base_hash": self.reported, "hash": self.hash, "apps": {"upsert": [updated]}}
