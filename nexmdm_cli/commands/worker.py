"""``nexmdm worker``: the FCM delivery worker on its own, with the maintenance and webhook duties of a server.

An operator may run the API nodes with ``--no-worker`` and dedicated workers: a worker then does
everything a server process does besides answering requests (``core.ops.maintenance``: campaigns, partitions,
the leader's expiry and presence sweeps, leader-elected through the ``leases`` table together with every
``nexmdm serve`` process; the webhook outbox; pushes). No web framework is imported.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer

from nexmdm_cli.state import err_console, print_json, state

if TYPE_CHECKING:
    from core.base.settings import Settings
    from core.commands.push import DeliveryWorker
    from nexmdm_cli.state import CliState


#: the webhook outbox is polled this often (a new event is usually found at once: the sender is woken)
WEBHOOK_POLL_SECONDS = 1.0
#: after the delivery loop has drained (at most NEXMDM_FCM_TIMEOUT_SECONDS + 1), the other threads get this long
#: together; a second Ctrl-C or SIGTERM stops at once
STOP_SECONDS = 10.0


#: said once when a worker starts without FCM credentials
NO_FCM = (
    "FCM is not configured (NEXMDM_FCM_CREDENTIALS): this worker runs maintenance and the webhook outbox, "
    "no push delivery; commands stay pending until devices poll for them (or a worker with credentials pushes them)"
)


def worker(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Run one round (expiry sweep, then one claimed batch) and exit.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="With --once: print the outcomes as JSON.")] = False,
) -> None:
    """Push accepted commands through FCM until stopped (Ctrl-C or SIGTERM; a second one stops at once).

    Also delivers the webhook outbox and runs the maintenance a server process runs (campaign waves,
    partitions, and, when elected leader among every server and worker, the expiry and presence sweeps).
    Without NEXMDM_FCM_CREDENTIALS it does those and no push delivery, and says so once (a polling-only
    fleet). Several workers may run at once: rows are claimed with a lease (SKIP LOCKED on PostgreSQL), so
    none is sent twice by two workers. With NEXMDM_REDIS_URL the FCM rate cap is shared by every sender.
    """
    from core.commands import push as delivery_module
    from core.commands.push import ratecap

    st = state(ctx)
    settings = st.settings
    st.require_migrated()
    client = delivery_module.client_from_settings(settings)
    if client is None:
        err_console.print(f"[yellow]note:[/yellow] {NO_FCM}")
    # with NEXMDM_REDIS_URL the FCM rate cap is shared by every sender of the cluster
    delivery = (
        None
        if client is None
        else delivery_module.DeliveryWorker(st.session_factory, settings, client, limiter=ratecap.rate_gate(settings))
    )
    try:
        if once:
            _once(st, settings, delivery, json_output)
            return
        _run(st, settings, delivery, None if client is None else client.project_id)
    finally:
        if delivery is not None:
            delivery.close()


def _once(st: CliState, settings: Settings, delivery: DeliveryWorker | None, json_output: bool) -> None:
    from core import campaigns as fleet
    from core.commands import push as delivery_module

    expired = delivery_module.sweep_expired(st.session_factory, settings)
    released = fleet.run_due(st.session_factory, settings)
    outcomes = delivery.run_once() if delivery is not None else []
    if json_output:
        print_json(
            {
                "expired": expired,
                "campaign_releases": released,
                "outcomes": outcomes,
                "fcm_configured": delivery is not None,
            }
        )
    elif delivery is None:
        err_console.print(f"expired {expired}, campaign releases {released}")
    else:
        err_console.print(f"expired {expired}, pushed {len(outcomes)}: {', '.join(outcomes) or 'nothing due'}")


def _run(st: CliState, settings: Settings, delivery: DeliveryWorker | None, project_id: str | None) -> None:
    """Delivery in this thread (or, without FCM, a wait); maintenance and the webhook outbox in their own,
    until a signal."""
    from core.events import sender as webhook_delivery
    from core.ops import leases
    from core.ops import maintenance as maintenance_module

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C or SIGTERM: now (unrecorded pushes are sent again after their lease)
            err_console.print("delivery worker stopped at once")
            os._exit(128 + signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    what = f"delivery worker started on {st.masked_url} (project {project_id})"
    if project_id is None:  # NO_FCM was said at the start
        what = f"worker started on {st.masked_url} (maintenance and webhooks)"
    err_console.print(f"{what}; Ctrl-C stops it")
    holder = leases.new_holder("worker")
    maintenance = maintenance_module.Maintenance(st.session_factory, st.engine, settings, holder)
    webhooks = webhook_delivery.WebhookSender(st.session_factory, settings)
    threads = [
        threading.Thread(target=maintenance.run, args=(stop,), name="nexmdm-maintenance", daemon=True),
        threading.Thread(target=webhooks.run, args=(stop, WEBHOOK_POLL_SECONDS), name="nexmdm-webhooks", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        if delivery is None:
            while not stop.wait(1.0):  # no pushes: the threads do the work; a signal ends the wait
                pass
        else:
            # the maintenance leader sweeps expired commands: the delivery loop only delivers
            delivery.run(stop, sweep_every=math.inf)
    finally:
        stop.set()
        webhooks.wake()
        deadline = time.monotonic() + STOP_SECONDS  # one bound for all: within a 30 s grace period
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        webhooks.close()
    if delivery is None:
        err_console.print("worker stopped")
    else:
        err_console.print(f"delivery worker stopped: {dict(delivery.totals) or 'nothing sent'}")
