"""The server process: start-up, the serving loop, signals and shutdown in one place."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web
from rich.console import Console

from llmsim.api import create_app
from llmsim.api.keys import ENGINE
from llmsim.banner import render_banner
from llmsim.config import Settings
from llmsim.engine import Engine
from llmsim.lifecycle import Lifecycle
from llmsim.loops import loop_factory
from llmsim.units import format_duration

logger = logging.getLogger("llmsim.server")

LISTEN_BACKLOG = 4096
FINAL_WRITE_GRACE = 0.5
"""After the engine is idle, how long handlers get to write their last bytes."""


class ServerStartError(Exception):
    """The server could not start listening."""


class Server:
    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(stderr=False)
        self.port: int | None = None
        self.loop_name, self._loop_factory = loop_factory()

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM; raise :class:`ServerStartError` if binding fails."""
        loop = self._loop_factory()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)

    async def serve(self) -> None:
        lifecycle = Lifecycle(self.settings.startup_duration)
        debug = self.settings.log_level == "debug"
        runner = web.AppRunner(
            create_app(self.settings, lifecycle),
            handler_cancellation=True,
            access_log=logging.getLogger("aiohttp.access") if debug else None,
            shutdown_timeout=FINAL_WRITE_GRACE,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                self.settings.host,
                self.settings.port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
            )
            try:
                await site.start()
            except OSError as exc:
                where = f"{self.settings.host}:{self.settings.port}"
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise ServerStartError(f"cannot listen on {where}: {reason.lower()}") from None
            self.port = _bound_port(runner, self.settings.port)
            render_banner(self.console, self.settings, self.port, self.loop_name)
            await self._wait_for_signal()
            await self._drain(lifecycle, site, runner.app[ENGINE])
        finally:
            # Cancels whatever is still running, which aborts its sequences.
            await runner.cleanup()

    async def _drain(self, lifecycle: Lifecycle, site: web.TCPSite, engine: Engine) -> None:
        """Stop taking requests, then give in-flight and queued ones time to finish."""
        lifecycle.begin_drain()
        await site.stop()
        timeout = self.settings.shutdown_timeout
        busy = engine.scheduler.num_running + engine.scheduler.num_waiting
        if busy:
            logger.info(
                "shutting down: waiting up to %s for %d requests", format_duration(timeout), busy
            )
        if not await engine.wait_idle(timeout):
            aborted = engine.abort_all()
            logger.warning("shutdown timeout reached: aborted %d sequences", aborted)

    async def _wait_for_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured


def configure_logging(level: str) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[
            RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        ],
        force=True,
    )
