"""Serving on one event loop: start-up, signals and shutdown of one or more instances.

A lone ``llmsim serve`` runs one instance here. Data-parallel ranks and fleets run
several here (the ``inprocess`` backend), or one per child process, each child running
this same server on a socket its parent bound (see :mod:`llmsim.supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aiohttp import web
from rich.console import Console

from llmsim.api import create_app
from llmsim.api.keys import ENGINE
from llmsim.banner import render_banner, render_instances_banner
from llmsim.config import Settings
from llmsim.instances import Instance
from llmsim.lifecycle import Lifecycle
from llmsim.loops import loop_factory
from llmsim.units import format_duration

logger = logging.getLogger("llmsim.server")

LISTEN_BACKLOG = 4096
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FINAL_WRITE_GRACE = 0.5
"""After the engine is idle, how long handlers get to write their last bytes."""


class ServerStartError(Exception):
    """The server could not start listening."""


@dataclass
class _Running:
    """An instance that is serving: what draining and cleaning up need."""

    instance: Instance
    lifecycle: Lifecycle
    runner: web.AppRunner
    site: web.BaseSite
    port: int


class Server:
    """Serve instances on one event loop until SIGINT or SIGTERM.

    ``listeners`` are sockets already bound and listening, one per instance (a child
    process of the ``mp`` backend); without them each instance binds its own port.
    ``announce`` prints the start-up panel (the parent prints it for its children).
    """

    def __init__(
        self,
        instances: Sequence[Instance] | Settings,
        console: Console | None = None,
        *,
        listeners: Sequence[socket.socket] | None = None,
        announce: bool = True,
    ) -> None:
        if isinstance(instances, Settings):
            instances = [Instance("", instances)]
        if listeners is not None and len(listeners) != len(instances):
            raise ValueError("one listener per instance")
        self.instances = list(instances)
        self.listeners = listeners
        self.announce = announce
        self.console = console or Console(stderr=False)
        self.ports: list[int] = []
        self.loop_name, self._loop_factory = loop_factory()

    @property
    def port(self) -> int | None:
        return self.ports[0] if self.ports else None

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
        async with contextlib.AsyncExitStack() as stack:
            # Listen for SIGINT/SIGTERM before the first port opens: a signal sent as
            # soon as the server answers must start a drain, not kill the process.
            with _stop_signals() as stop:
                running = [
                    await self._start(instance, index, stack)
                    for index, instance in enumerate(self.instances)
                ]
                self.ports = [item.port for item in running]
                if self.announce:
                    self._render_banner()
                await stop.wait()
            await asyncio.gather(*(self._drain(item) for item in running))
            # Leaving the stack cleans up every runner, which cancels whatever is
            # still running and so aborts its sequences.

    async def _start(
        self, instance: Instance, index: int, stack: contextlib.AsyncExitStack
    ) -> _Running:
        settings = instance.settings
        lifecycle = Lifecycle(settings.startup_duration)
        debug = settings.log_level == "debug"
        runner = web.AppRunner(
            create_app(settings, lifecycle, rank=instance.rank),
            handler_cancellation=True,
            access_log=logging.getLogger("aiohttp.access") if debug else None,
            shutdown_timeout=FINAL_WRITE_GRACE,
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site: web.BaseSite
        if self.listeners is not None:
            site = web.SockSite(runner, self.listeners[index])
        else:
            site = web.TCPSite(
                runner, settings.host, settings.port, backlog=LISTEN_BACKLOG, reuse_address=True
            )
        try:
            await site.start()
        except OSError as exc:
            raise listen_error(instance, exc) from None
        return _Running(instance, lifecycle, runner, site, _bound_port(runner, settings.port))

    def _render_banner(self) -> None:
        if len(self.instances) == 1 and not self.instances[0].name:
            render_banner(self.console, self.instances[0].settings, self.ports[0], self.loop_name)
            return
        pids = [os.getpid()] * len(self.instances)
        render_instances_banner(
            self.console, self.instances, self.ports, pids, f"{self.loop_name}, one process"
        )

    async def _drain(self, item: _Running) -> None:
        """Stop taking requests, then give in-flight and queued ones time to finish."""
        item.lifecycle.begin_drain()
        await item.site.stop()
        engine = item.runner.app[ENGINE]
        timeout = item.instance.settings.shutdown_timeout
        busy = engine.scheduler.num_running + engine.scheduler.num_waiting
        prefix = f"{item.instance.name}: " if item.instance.name else ""
        if busy:
            logger.info(
                "%sshutting down: waiting up to %s for %d requests",
                prefix,
                format_duration(timeout),
                busy,
            )
        if not await engine.wait_idle(timeout):
            aborted = engine.abort_all()
            logger.warning("%sshutdown timeout reached: aborted %d sequences", prefix, aborted)


@contextlib.contextmanager
def _stop_signals() -> Iterator[asyncio.Event]:
    """An event set by the first SIGINT or SIGTERM; the handlers go on exit, so a
    second Ctrl-C during the drain interrupts it.

    The signals are unblocked once handled: a supervised child starts with them
    blocked, so one sent while it starts waits for the handler instead of killing it.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield stop
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def listen_error(instance: Instance, exc: OSError) -> ServerStartError:
    """``[name: ]cannot listen on HOST:PORT: reason``, the one line the CLI prints."""
    settings = instance.settings
    where = f"{settings.host}:{settings.port}"
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    prefix = f"{instance.name}: " if instance.name else ""
    return ServerStartError(f"{prefix}cannot listen on {where}: {reason.lower()}")


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
