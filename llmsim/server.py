"""The server process: start-up, the serving loop, signals and shutdown in one place."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from aiohttp import web
from rich.console import Console

from llmsim.api import create_app
from llmsim.api.access_log import AccessLogger
from llmsim.api.keys import ENGINE, LIVE_STATS
from llmsim.banner import base_url, render_banner, startup_fields
from llmsim.config import Settings
from llmsim.dashboard import Dashboard
from llmsim.engine import Engine
from llmsim.lifecycle import Lifecycle
from llmsim.logs import ACCESS_LOGGER, AccessWriter, log_with_fields
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
        self._dashboard: Dashboard | None = None

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM; raise :class:`ServerStartError` if binding fails."""
        loop = self._loop_factory()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.serve())
        finally:
            if self._dashboard is not None:
                self._dashboard.close()  # a second Ctrl-C skipped the orderly stop
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)

    async def serve(self) -> None:
        lifecycle = Lifecycle(self.settings.startup_duration)
        access = (
            AccessWriter(self.settings.log_format) if self.settings.access_log_enabled else None
        )
        runner = web.AppRunner(
            create_app(self.settings, lifecycle),
            handler_cancellation=True,
            shutdown_timeout=FINAL_WRITE_GRACE,
            **_access_log_options(access),
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
            self._announce(self.port)
            dashboard = self._start_dashboard(runner.app, lifecycle, self.port)
            try:
                await self._wait_for_signal()
                await self._drain(lifecycle, site, runner.app[ENGINE])
            finally:
                if dashboard is not None:
                    await dashboard.stop()
        finally:
            # Cancels whatever is still running, which aborts its sequences.
            await runner.cleanup()
            if access is not None:
                access.flush()

    def _announce(self, port: int) -> None:
        """The start-up banner, or one JSON record when logs are JSON."""
        if self.settings.log_format == "json":
            fields = startup_fields(self.settings, port, self.loop_name)
            message = f"llmsim {fields['version']} serving {fields['model']} at {fields['url']}"
            log_with_fields(logger, logging.INFO, message, fields)
        else:
            render_banner(self.console, self.settings, port, self.loop_name)

    def _start_dashboard(
        self, app: web.Application, lifecycle: Lifecycle, port: int
    ) -> Dashboard | None:
        stats = app.get(LIVE_STATS)
        if stats is None:
            return None
        dashboard = Dashboard(
            self.settings,
            app[ENGINE],
            stats,
            base_url(self.settings, port),
            self.console,
            lifecycle,
        )
        dashboard.start()
        self._dashboard = dashboard
        return dashboard

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


def _access_log_options(writer: AccessWriter | None) -> dict[str, Any]:
    """aiohttp's access-log hook, writing through ``writer`` (None: no access log)."""
    if writer is None:
        return {"access_log": None}
    return {
        "access_log": logging.getLogger(ACCESS_LOGGER),
        "access_log_class": AccessLogger.writing_to(writer),
    }
