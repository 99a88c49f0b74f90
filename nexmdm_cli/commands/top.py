"""``nexmdm top``: the fleet right now, refreshed in the terminal until ``q`` or Ctrl-C.

It reads the database directly, like the other operator commands; every query is index-backed
(``core.ops.fleet_stats``). ``--selector`` narrows the device figures to the matching devices; its terms
without an index read every device, under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS``. Figures
that leave no row in the database (the share of heartbeats that fell into an existing bucket) come
from the servers' ``/metrics`` when ``--metrics-url`` is given.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from nexmdm_cli.render import JsonOption, escape, note
from nexmdm_cli.state import CliState, first_line, out_console, print_json, state

#: the dedup share in the live view is taken over this many seconds of scrapes
DEDUP_WINDOW_SECONDS = 60.0


class MetricsSource:
    """The heartbeat counters of one or more servers' ``/metrics`` (summed), and the dedup share."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.samples: deque[tuple[float, float, float]] = deque()
        self.error: str | None = None

    def _scrape(self) -> tuple[float, float]:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        created = deduplicated = 0.0
        for url in self.urls:
            response = httpx.get(url, timeout=2.0)
            response.raise_for_status()
            for family in text_string_to_metric_families(response.text):
                if family.name != "nexmdm_heartbeats":
                    continue
                for sample in family.samples:
                    if sample.name != "nexmdm_heartbeats_total":
                        continue
                    if sample.labels.get("result") == "created":
                        created += sample.value
                    elif sample.labels.get("result") == "deduplicated":
                        deduplicated += sample.value
        return created, deduplicated

    def dedup(self) -> dict[str, Any] | None:
        """``{"share", "window", "sources"}``; the share is over the last minute once two scrapes span
        time, else since the servers started. ``None`` (and ``error`` set) when a server cannot be read."""
        try:
            created, dedup = self._scrape()
        except Exception as exc:  # noqa: BLE001 - any failure to read a server is shown, never fatal
            self.error = f"metrics: {first_line(exc)}"
            return None
        self.error = None
        now = time.monotonic()
        if self.samples and (created < self.samples[-1][1] or dedup < self.samples[-1][2]):
            self.samples.clear()  # a server restarted: its counters began again
        self.samples.append((now, created, dedup))
        while len(self.samples) > 2 and now - self.samples[1][0] >= DEDUP_WINDOW_SECONDS:
            self.samples.popleft()
        first = self.samples[0]
        if len(self.samples) > 1:
            created, dedup = created - first[1], dedup - first[2]
            window = "1m"
        else:
            window = "since start"
        total = created + dedup
        return {"share": dedup / total if total else None, "window": window, "sources": self.urls}


def _snapshot(st: CliState, metrics: MetricsSource | None, offline_limit: int, selector: Any = None) -> dict[str, Any]:
    from core.ops import fleet_stats

    started = time.perf_counter()
    with st.session() as db:
        snap = fleet_stats.snapshot(db, st.settings, offline_limit=offline_limit, selector=selector)
    snap["query_ms"] = (time.perf_counter() - started) * 1000
    if metrics is not None:
        snap["heartbeats"]["dedup"] = metrics.dedup()
    return snap


def _reason(exc: BaseException) -> str:
    """Why a refresh failed, short enough for the header line (the selector is already on it)."""
    from core.base.errors import NexMDMError, SelectorTooSlow

    if isinstance(exc, SelectorTooSlow):
        return f"selector query over {exc.limit_ms} ms: narrow it"
    return exc.message if isinstance(exc, NexMDMError) else f"database: {first_line(exc)}"


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (keys arrive one by one, Ctrl-C still interrupts); None without a terminal."""
    if not sys.stdin.isatty():
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _resizes() -> Iterator[int]:
    """A pipe that becomes readable when the terminal is resized (SIGWINCH), to redraw at once."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def on_resize(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(write_end, b"w")

    previous = signal.signal(signal.SIGWINCH, on_resize)
    try:
        yield read_end
    finally:
        signal.signal(signal.SIGWINCH, previous)
        os.close(read_end)
        os.close(write_end)


def _live(st: CliState, metrics: MetricsSource | None, interval: float, selector: Any) -> None:
    from rich.live import Live

    from nexmdm_cli import top_view

    def draw(snap: dict[str, Any], problem: str | None) -> Any:
        width, height = out_console.size
        return top_view.screen(snap, st.masked_url, width, height, interval=interval, note=problem)

    def rows() -> int:
        width, height = out_console.size
        return top_view.offline_rows(width, height)

    snap = _snapshot(st, metrics, rows(), selector)  # a first failure is an ordinary CLI error
    problem = metrics.error if metrics else None
    with _keys() as keys, _resizes() as resized, Live(console=out_console, screen=True, auto_refresh=False) as live:
        live.update(draw(snap, problem), refresh=True)
        next_at = time.monotonic() + interval
        while True:
            watched = [resized] + ([keys] if keys is not None else [])
            ready, _, _ = select.select(watched, [], [], max(next_at - time.monotonic(), 0))
            if keys in ready and os.read(keys, 32).lower().startswith(b"q"):
                return
            if resized in ready:
                os.read(resized, 64)
            if time.monotonic() >= next_at:
                next_at = time.monotonic() + interval
                try:
                    snap = _snapshot(st, metrics, rows(), selector)
                    problem = metrics.error if metrics else None
                except Exception as exc:  # noqa: BLE001 - keep the screen; say why the figures are old
                    problem = f"{_reason(exc)} (showing the last figures)"
            live.update(draw(snap, problem), refresh=True)


def top(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.5, max=3600, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print the figures once as tables and exit.")] = False,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            "-l",
            help="Only devices matching ('store=42,@state=online'): states, heartbeats, went offline.",
        ),
    ] = None,
    metrics_url: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics-url",
            help="A server's /metrics (repeat for several): adds the heartbeat dedup share, which leaves no row.",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=0, max=1000, help="With --once or --json: at most this many went-offline devices.")
    ] = 20,
    json_output: JsonOption = False,
) -> None:
    """The fleet right now, refreshed live: devices online/stale/offline/revoked, heartbeats per second,
    commands by status, the push queue, push and ack latency, campaigns in flight with their progress,
    devices that went offline in the last hour.

    --selector narrows the device states, heartbeats and went-offline list to the matching devices
    (commands, the push queue and campaigns stay fleet-wide). Press q or Ctrl-C to quit. Without a
    terminal (or with --once) it prints the figures once.
    """
    st = state(ctx)
    chosen = None
    if selector is not None:
        from core.devices.selectors import parse

        chosen = parse(selector)  # a bad selector is one line and exit 2, before any screen
    metrics = MetricsSource(metrics_url) if metrics_url else None
    if json_output or once or not out_console.is_terminal:
        snap = _snapshot(st, metrics, limit, chosen)
        if json_output:
            print_json(snap)
            return
        from nexmdm_cli import top_view

        out_console.print(top_view.once(snap, st.masked_url, out_console.width, metrics.error if metrics else None))
        if metrics is not None and metrics.error:
            note(f"[yellow]warning:[/yellow] {escape(metrics.error)}")
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how people leave top: a clean exit
        _live(st, metrics, interval, chosen)
