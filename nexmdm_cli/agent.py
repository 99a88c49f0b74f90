"""The reference agent's actions, as ``nexmdm simulate`` devices execute them (docs/actions.md, "For agents").

Each command becomes an ack body: ``completed`` with a result that matches the action's result schema, or
``failed`` with an error code. An action the agent does not know is acked ``failed`` with ``UNSUPPORTED``
(never left pending until it expires). A device in lost mode reports a fix with every heartbeat.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from core.commands.action_schemas import BUILTIN

#: where simulated devices are: around a few cities (latitude, longitude)
CITIES = ((52.52, 13.40), (48.86, 2.35), (40.42, -3.70), (51.51, -0.13), (45.46, 9.19))


class SimulatedAgent:
    """What simulated devices do with their commands; ``lost`` holds the devices in lost mode."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lost: set[str] = set()
        self._homes: dict[str, tuple[float, float]] = {}

    def fix(self, device_id: str) -> dict[str, Any]:
        """A plausible fix: within a few hundred metres of the device's home, taken now."""
        home = self._homes.setdefault(device_id, self.rng.choice(CITIES))
        return {
            "lat": round(home[0] + self.rng.uniform(-0.005, 0.005), 6),
            "lon": round(home[1] + self.rng.uniform(-0.005, 0.005), 6),
            "accuracy_m": round(self.rng.uniform(5, 60), 1),
            "fixed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }

    def execute(self, device_id: str, command: dict[str, Any]) -> dict[str, Any]:
        """The ack body for one command (``status`` and ``result`` or ``error_code``)."""
        action = command.get("action")
        if action not in BUILTIN:
            return {"status": "failed", "error_code": "UNSUPPORTED", "detail": f"this agent does not know {action!r}"}
        result: dict[str, Any] = {}
        if action == "locate":
            result = self.fix(device_id)
        elif action == "lost_mode":
            self.lost.add(device_id)
            result = {"location": self.fix(device_id)}
        elif action in ("lost_mode_off", "wipe"):
            self.lost.discard(device_id)
        return {"status": "completed", "result": result, "detail": "simulated"}
