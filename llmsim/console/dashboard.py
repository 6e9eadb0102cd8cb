"""``llmsim serve --dashboard``: a live terminal view of what the simulated server is doing.

Drawn by an asyncio task on the server's own event loop (never a thread), so reading the
scheduler needs no locks and a frame is a consistent picture of one moment. Log records
print above the view because logging shares its console. When standard output is not a
terminal nothing is drawn while serving; the last frame is printed when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from llmsim.engine import Engine
from llmsim.observability.live_stats import LiveStats, Percentiles, StatsSnapshot
from llmsim.runtime.lifecycle import Lifecycle
from llmsim.settings.model import Settings

logger = logging.getLogger("llmsim.dashboard")

REFRESH_SECONDS = 0.25
"""Four frames a second."""
TITLE = "llmsim dashboard"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_latency(seconds: float) -> str:
    """Three significant digits in a readable unit: ``0``, ``850us``, ``12.3ms``, ``1.25s``."""
    if seconds <= 0:
        return "0"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g}us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds:.3g}s"


def format_uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_span(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 9.95 else f"{seconds:.1f}s"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


class Dashboard:
    """Renders frames from the engine and the live stats; refreshes them while running."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        stats: LiveStats,
        url: str,
        console: Console,
        lifecycle: Lifecycle | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.stats = stats
        self.url = url
        self.console = console
        self.lifecycle = lifecycle
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._started = clock()
        # Writes to standard error (JSON logs) go above the view only when they would
        # otherwise land on the same terminal; redirected to a file, they stay there.
        self._live = Live(
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stderr=_is_terminal(sys.stderr),
        )
        self._task: asyncio.Task[None] | None = None

    # -- running ----------------------------------------------------------------
    def start(self) -> None:
        """Begin drawing (call from the event loop)."""
        self._live.start()
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        """Stop drawing and leave the last frame on screen (or in the log)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.close()

    def close(self) -> None:
        """Print the last frame and give the terminal back (cursor, streams). Idempotent,
        and safe outside the loop: the server calls it after a second Ctrl-C."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._live.is_started:
            self._live.update(self.render())
            self._live.stop()

    async def _refresh_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if self.console.is_terminal:
                try:
                    self._live.update(self.render(), refresh=True)
                except Exception:
                    logger.exception("the dashboard cannot be drawn; it stops refreshing")
                    return
            due += self.refresh_seconds
            now = loop.time()
            if due < now:  # fell behind (a busy loop): skip frames rather than burst
                due = now
            await asyncio.sleep(due - now)

    # -- drawing ----------------------------------------------------------------
    def render(self) -> RenderableType:
        """One frame: load, LoRA, rates, latency, recent errors.

        Plain styled lines rather than nested tables: rich lays tables out cell by cell,
        which made a frame several times dearer to draw.
        """
        snapshot = self.stats.snapshot()
        phase = self.lifecycle.phase if self.lifecycle is not None else "ready"
        title = (
            f"[bold]{TITLE}[/bold] · {escape(self.settings.served_names[0])} · {self.url} · "
            f"{phase} · up {format_uptime(self._clock() - self._started)}"
        )
        frame = Text(no_wrap=True, overflow="ellipsis")
        for label, value in self._overview(snapshot):
            frame.append(f"{label:>13}  ", style="bold cyan")
            frame.append(value + "\n")
        frame.append(f"\n{'latency':>13}  ", style="bold cyan")
        frame.append(f"{'p50':>9} {'p90':>9} {'p99':>9} {'samples':>10}", style="bold")
        frame.append(f"   last {format_span(snapshot.window_seconds)}\n", style="dim")
        for name, values in (("TTFT", snapshot.ttft), ("ITL", snapshot.itl)):
            frame.append(f"{name:>13}  ", style="cyan")
            frame.append(" ".join(_percentile_cells(values)) + "\n")
        frame.append(f"\n{'recent errors':>13}  ", style="bold cyan")
        if not snapshot.recent_errors:
            frame.append("none", style="dim")
        for index, error in enumerate(reversed(snapshot.recent_errors)):
            if index:
                frame.append("\n" + " " * 15)
            moment = dt.datetime.fromtimestamp(error.time).strftime("%H:%M:%S")
            frame.append(f"{moment} ", style="dim")
            frame.append(f"{error.status} ", style="bold red")
            frame.append(f"{error.type}  {error.request}  ", style="red")
            frame.append(error.message)
        return Panel(frame, title=title, title_align="left", border_style="cyan")

    def _load_line(self) -> str:
        settings, scheduler = self.settings, self.engine.scheduler
        if self.engine.step is not None:
            return step_load_line(self.engine, settings)
        kv_tokens = scheduler.kv_tokens()
        kv_share = min(kv_tokens / settings.kv_cache_size, 1.0)
        if self.engine.blocks is not None:
            kv_share = self.engine.blocks.usage()
        return (
            f"running {scheduler.num_running} / {settings.max_running_requests}   "
            f"waiting {scheduler.num_waiting} / {settings.max_waiting_queue_length}   "
            f"KV cache {kv_share:.1%} ({kv_tokens:,} / {settings.kv_cache_size:,} tokens)"
        )

    def _overview(self, snapshot: StatsSnapshot) -> list[tuple[str, str]]:
        settings, scheduler = self.settings, self.engine.scheduler
        waiting = scheduler.waiting_adapters()
        warm = self.engine.loras.warm_adapters()
        finished = snapshot.finished
        return [
            ("load", self._load_line()),
            ("LoRA slots", self._lora_slots()),
            ("LoRA waiting", ", ".join(waiting) if waiting else "-"),
            (
                "LoRA warm",
                f"{', '.join(warm) if warm else '-'}  "
                f"(CPU cache {len(warm)} / {settings.cpu_lora_capacity}, least recently used first)",
            ),
            (
                f"last {format_span(snapshot.window_seconds)}",
                f"requests/s {_rate(snapshot.requests_per_second)}   "
                f"tokens/s {_rate(snapshot.tokens_per_second)}   "
                f"errors/s {_rate(snapshot.errors_per_second)}",
            ),
            (
                "since start",
                f"requests {snapshot.total_requests:,}   tokens {snapshot.total_tokens:,}   "
                f"errors {snapshot.total_errors:,}   finished: stop {finished.get('stop', 0):,}, "
                f"length {finished.get('length', 0):,}, abort {finished.get('abort', 0):,}",
            ),
        ]

    def _lora_slots(self) -> str:
        slots = self.engine.loras.slots()
        held = [
            f"{slot.adapter} ({slot.running} running)" if slot.running else f"{slot.adapter} (idle)"
            for slot in slots
        ]
        used = f"{len(slots)} / {self.settings.max_loras} used"
        return f"{used}: {', '.join(held)}" if held else used


def step_load_line(engine: Engine, settings: Settings) -> str:
    """Step mode: running and waiting in the engine loop, KV blocks, prefix hits, preemptions."""
    assert engine.step is not None
    core = engine.step.engine
    pool = core.pool
    waiting = engine.scheduler.num_waiting + core.num_waiting
    queries = core.prefix_queries
    hit_rate = f"{core.prefix_hits / queries:.1%}" if queries else "-"
    return (
        f"running {core.num_running} / {settings.max_running_requests}   "
        f"waiting {waiting} / {settings.max_waiting_queue_length}   "
        f"KV cache {core.usage():.1%} ({pool.num_used:,} / {pool.num_blocks:,} blocks, "
        f"{pool.num_cached:,} cached)   prefix hits {hit_rate}   "
        f"preemptions {core.num_preemptions:,}"
    )


def _percentile_cells(values: Percentiles | None) -> list[str]:
    if values is None:
        return [f"{'-':>9}", f"{'-':>9}", f"{'-':>9}", f"{0:>10}"]
    return [
        f"{format_latency(values.p50):>9}",
        f"{format_latency(values.p90):>9}",
        f"{format_latency(values.p99):>9}",
        f"{values.count:>10,}",
    ]
