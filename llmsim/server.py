"""The server process: start-up, the serving loop, signals and shutdown in one place."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web
from rich.console import Console

from llmsim.api import create_app
from llmsim.banner import render_banner
from llmsim.config import Settings
from llmsim.loops import loop_factory

logger = logging.getLogger("llmsim.server")

SHUTDOWN_GRACE_SECONDS = 2.0
LISTEN_BACKLOG = 4096


class ServerStartError(Exception):
    """The server could not start listening."""


class Server:
    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(stderr=False)
        self.port: int | None = None
        self.loop_name, self._loop_factory = loop_factory()
        self._stop: asyncio.Event | None = None

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
        runner = web.AppRunner(
            create_app(self.settings),
            handler_cancellation=True,
            access_log=logging.getLogger("aiohttp.access")
            if self.settings.log_level == "debug"
            else None,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
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
            logger.info("shutting down")
        finally:
            await runner.cleanup()

    async def _wait_for_signal(self) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop.set)
        try:
            await self._stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


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
