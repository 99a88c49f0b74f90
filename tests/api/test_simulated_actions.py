"""``nexmdm simulate`` is the reference agent: its devices execute every action with a result that passes the
action's result schema, ack unknown actions UNSUPPORTED, and report fixes while in lost mode."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands import dispatches
from core.commands.action_schemas import BUILTIN
from core.commands.results import check_answer
from core.enrollment.tokens import create_enrollment_token
from core.models import DeviceLocation, FcmDispatch
from nexmdm_cli.agent import SimulatedAgent
from nexmdm_cli.simulation import Simulation
from tests.support.api import live_server

STATUSES = {"completed": "acked", "failed": "failed"}


def test_the_agent_answers_every_action_within_its_schema() -> None:
    agent = SimulatedAgent(random.Random(7))
    for action in BUILTIN:
        body = agent.execute("dev_1", {"request_id": "r", "action": action, "payload": {}})
        answer = check_answer(None, action, STATUSES[body["status"]], body.get("result"), body.get("error_code"))
        assert body["status"] == "completed" and answer.error_code is None, action
        if action in ("locate", "lost_mode"):
            assert answer.fix is not None and -90 <= answer.fix["lat"] <= 90
    assert agent.lost == set()  # lost_mode_off (then wipe) ended the lost mode that lost_mode began
    unknown = agent.execute("dev_1", {"request_id": "r", "action": "acme_thing"})
    assert (unknown["status"], unknown["error_code"]) == ("failed", "UNSUPPORTED")


def test_simulated_devices_execute_actions_end_to_end(
    settings: Settings, session_factory: sessionmaker[Session], engine: object
) -> None:
    settings = settings.with_overrides(actions=("acme_thing",))  # an operator's action the agent does not know
    with session_factory.begin() as db:
        token, _ = create_enrollment_token(db, uses=10)

    async def send(running: Simulation) -> None:
        while len(running.tokens) < 2:
            await asyncio.sleep(0.05)
        first, second = sorted(running.tokens)
        with session_factory.begin() as db:
            for key, device_id, action, payload in (
                ("s-locate", first, "locate", None),
                ("s-unknown", first, "acme_thing", {"x": 1}),
                ("s-lost", second, "lost_mode", {"message": "found me?"}),
            ):
                dispatches.create_command(
                    db, settings, request_id=key, device_id=device_id, action=action, payload=payload
                )

    with live_server(settings) as port:
        sim = Simulation(f"http://127.0.0.1:{port}", token, devices=2, duration=3.0, interval=0.3, poll_every=1)
        report = asyncio.run(sim.run(during=send))
    assert report["errors_by_status"] == {}, report
    with session_factory() as db:
        rows = {r.request_id: r for r in db.execute(select(FcmDispatch)).scalars()}
        fixes = db.execute(select(DeviceLocation.source, DeviceLocation.request_id)).all()
    assert rows["s-locate"].status == "acked" and set(rows["s-locate"].result) == {
        "lat",
        "lon",
        "accuracy_m",
        "fixed_at",
    }
    assert (rows["s-unknown"].status, rows["s-unknown"].error_code) == ("failed", "UNSUPPORTED")
    assert rows["s-lost"].status == "acked"
    assert ("locate", "s-locate") in fixes and ("lost_mode", "s-lost") in fixes
    assert ("lost_mode", None) in fixes  # a periodic report of the device in lost mode
