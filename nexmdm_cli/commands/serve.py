"""``nexmdm serve``: the API under uvicorn, one app per worker process (built by a factory)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Annotated

import typer
from rich.markup import escape

from core.base.settings import Settings
from nexmdm_cli.state import CliState, info, state

FACTORY = "nexmdm_api.app:create_app"


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (each with its own pool).")] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (method, path, status; never credentials).")
    ] = False,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="With FCM configured, run a delivery worker in each server process (else run `nexmdm worker`).",
        ),
    ] = True,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Proxies (addresses, networks or *) whose X-Forwarded-For/-Proto are trusted: the load "
            "balancer's. Default NEXMDM_FORWARDED_ALLOW_IPS, else 127.0.0.1.",
        ),
    ] = None,
) -> None:
    """Run the device and admin API (uvicorn, a production ASGI server)."""
    import uvicorn

    st = state(ctx)
    settings = st.settings
    if forwarded_allow_ips is None and not os.environ.get("NEXMDM_FORWARDED_ALLOW_IPS"):
        forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS")  # uvicorn's own variable, still honoured
    if forwarded_allow_ips is not None:
        settings = settings.with_overrides(forwarded_allow_ips=forwarded_allow_ips)
    # Workers build their own settings from the environment: hand them the database chosen here, and the
    # trusted proxies (the app reads X-Forwarded-For itself: nexmdm_api.forwarded)
    os.environ["NEXMDM_DATABASE_URL"] = settings.database_url
    os.environ["NEXMDM_FORWARDED_ALLOW_IPS"] = settings.forwarded_allow_ips
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client's multiprocess mode: each worker writes its samples here, /metrics sums them.
        metrics_dir = tempfile.mkdtemp(prefix="nexmdm-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["NEXMDM_DELIVERY_IN_SERVER"] = "true" if worker else "false"
    _warn_if_not_migrated(st)
    _say_how_commands_reach_devices(settings, worker)
    if settings.forwarded_allow_ips:
        info(f"client addresses from X-Forwarded-For sent by {escape(settings.forwarded_allow_ips)}")
    info(
        f"NexMDM API on [bold]http://{escape(host)}:{port}[/bold] · database {escape(st.masked_url)} · "
        f"{workers} worker{'s' if workers > 1 else ''} · OpenAPI at /schema/openapi.json"
    )
    st.close()
    try:
        uvicorn.run(
            FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_level=settings.log_level.lower(),
            # the app believes X-Forwarded-For from NEXMDM_FORWARDED_ALLOW_IPS only, and only when it holds
            # an address (uvicorn's own handling took any text, and left the app no peer to fall back to)
            proxy_headers=False,
            server_header=False,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _say_how_commands_reach_devices(settings: Settings, worker: bool) -> None:
    """Once at start-up: is FCM push on, and where does the delivery worker run?"""
    from core.commands import push as delivery

    client = delivery.client_from_settings(settings)  # a broken credentials file fails here, in one clear line
    if client is None:
        info(
            "[yellow]FCM push is off[/yellow] (NEXMDM_FCM_CREDENTIALS is not set): "
            "commands stay pending until devices poll GET /v1/commands/pending"
        )
        return
    where = "a delivery worker in each server process" if worker else "no worker here: run `nexmdm worker`"
    info(f"FCM push on for project [bold]{escape(client.project_id)}[/bold]: {where}")


def _warn_if_not_migrated(st: CliState) -> None:
    try:
        st.require_migrated()
    except Exception as exc:  # noqa: BLE001 - the server still starts; /readyz reports the same problem
        info(f"[yellow]warning:[/yellow] {escape(getattr(exc, 'message', str(exc)))} (/readyz answers 503 until then)")
