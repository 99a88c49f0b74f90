"""``nexmdm worker``: the FCM delivery worker on its own (``nexmdm serve`` also runs one by default)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from nexmdm_cli.errors import EXIT_USAGE
from nexmdm_cli.lazy import lazy_module
from nexmdm_cli.state import err_console, print_json, state

delivery_module = lazy_module("core.delivery")
fleet = lazy_module("core.fleet")
ratecap = lazy_module("core.delivery.ratecap")


def worker(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Run one round (expiry sweep, then one claimed batch) and exit.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="With --once: print the outcomes as JSON.")] = False,
) -> None:
    """Push accepted commands through FCM until stopped (Ctrl-C or SIGTERM).

    Needs NEXMDM_FCM_CREDENTIALS. Several workers may run at once, on PostgreSQL: rows are claimed with
    SKIP LOCKED and a lease, so none is sent twice by two workers.
    """
    st = state(ctx)
    settings = st.settings
    st.require_migrated()
    client = delivery_module.client_from_settings(settings)
    if client is None:
        err_console.print(
            "[red]error:[/red] FCM is not configured (set NEXMDM_FCM_CREDENTIALS); "
            "commands stay pending until devices poll for them"
        )
        raise typer.Exit(code=EXIT_USAGE)
    # with NEXMDM_REDIS_URL the FCM rate cap is shared by every sender of the cluster
    gate = ratecap.rate_gate(settings)
    delivery = delivery_module.DeliveryWorker(st.session_factory, settings, client, limiter=gate)
    try:
        if once:
            expired = delivery.sweep_expired()
            released = fleet.run_due(st.session_factory, settings)
            outcomes = delivery.run_once()
            if json_output:
                print_json({"expired": expired, "campaign_releases": released, "outcomes": outcomes})
            else:
                err_console.print(f"expired {expired}, pushed {len(outcomes)}: {', '.join(outcomes) or 'nothing due'}")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        err_console.print(f"delivery worker started on {st.masked_url} (project {client.project_id}); Ctrl-C stops it")
        campaigns = threading.Thread(
            target=fleet.campaign_loop, args=(st.session_factory, settings, stop), name="nexmdm-campaigns", daemon=True
        )
        campaigns.start()
        delivery.run(stop)
        campaigns.join(timeout=15)
        err_console.print(f"delivery worker stopped: {dict(delivery.totals) or 'nothing sent'}")
    finally:
        delivery.close()
