"""Serving on one event loop: start-up, signals and shutdown of one or more instances.

A lone ``llmsim serve`` runs one instance here. Data-parallel ranks and fleets run
several here (the ``inprocess`` backend), or one per child process, each child running
this same server on a socket its parent bound (see :mod:`llmsim.pool.supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from rich.console import Console

from llmsim.answers.dataset import DatasetError
from llmsim.answers.recording import RecordingError
from llmsim.api import create_app
from llmsim.api.http.access_log import AccessLogger
from llmsim.api.http.bodies import serve_bodies_encoded
from llmsim.api.http.keys import ENGINE, ENGINES, LIVE_STATS
from llmsim.api.http.openapi import openapi_document
from llmsim.console.banner import base_url, render_banner, render_instances_banner, startup_fields
from llmsim.console.dashboard import Dashboard
from llmsim.observability.kv_publishing import KVEventsStartError
from llmsim.observability.logs import ACCESS_LOGGER, AccessWriter, log_with_fields
from llmsim.runtime.lifecycle import Lifecycle
from llmsim.server.collector import settle_for_serving
from llmsim.server.keep_alive import KeepAliveError, keep_alive_options
from llmsim.server.listener import GreedyAcceptSite, bind_listener, bind_unix_listener
from llmsim.server.loops import loop_factory
from llmsim.server.tls import CertificateRefresher, TLSError, server_context
from llmsim.server.watchdog import StopDeadline
from llmsim.settings.fake_metrics import FakeMetricsError
from llmsim.settings.instances import Instance
from llmsim.settings.model import Settings
from llmsim.settings.units import format_duration

if TYPE_CHECKING:
    from llmsim.api.grpc.server import GrpcDoor

logger = logging.getLogger("llmsim.server")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FINAL_WRITE_GRACE = 0.5
"""After the engine is idle, how long handlers get to write their last bytes."""
MIN_HEADER_LINE = 16 * 1024
"""Smallest limit on one header line: twice aiohttp's default, room for large tokens."""


class ServerStartError(Exception):
    """The server could not start; ``exit_code`` 2 marks a setting the server refused."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class _Running:
    """An instance that is serving: what draining and cleaning up need."""

    instance: Instance
    lifecycle: Lifecycle
    runner: web.AppRunner
    site: web.BaseSite | None
    """The HTTP listener (None: ``--grpc`` serves gRPC only)."""
    port: int
    grpc: GrpcDoor | None = None
    """The gRPC listener beside HTTP (``--grpc-port``) or instead of it, on the same engine."""


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
        self.grpc_ports: list[int | None] = []
        self.loop_name, self._loop_factory = loop_factory()
        self._dashboard: Dashboard | None = None
        timeout = max(instance.settings.shutdown_timeout for instance in self.instances)
        self._deadline = StopDeadline(timeout, STOP_SIGNALS)
        """Ends the process if shutdown outlasts the timeout (a blocked event loop)."""

    @property
    def port(self) -> int | None:
        return self.ports[0] if self.ports else None

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM; raise :class:`ServerStartError` if binding fails.

        Once a stop signal arrived, the process ends within the shutdown timeout and a
        short grace even if a handler blocks the event loop (:mod:`.watchdog`).
        """
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
            self._deadline.disarm()

    async def serve(self) -> None:
        first = self.instances[0].settings
        access = AccessWriter(first.log_format) if _any_access_log(self.instances) else None
        async with contextlib.AsyncExitStack() as stack:
            if access is not None:
                stack.callback(access.flush)
            # Listen for SIGINT/SIGTERM before the first port opens: a signal sent as
            # soon as the server answers must start a drain, not kill the process.
            with _stop_signals(self._deadline) as stop:
                running = [
                    await self._start(instance, index, stack, access)
                    for index, instance in enumerate(self.instances)
                ]
                self.ports = [item.port for item in running]
                self.grpc_ports = [item.grpc.port if item.grpc else None for item in running]
                # What start-up built (the imports, every instance's app and engines) lives
                # as long as the process: keep it out of the collector's full passes, which
                # took about 100 ms in a process of 32 instances and stalled all their steps;
                # and scan the requests in flight rarely (see collector).
                settle_for_serving()
                if self.announce:
                    self._announce()
                # A supervised child (announce=False) leaves the terminal to its parent.
                dashboard = self._start_dashboard(running) if self.announce else None
                try:
                    await stop.wait()
                finally:
                    if dashboard is not None:
                        await dashboard.stop()
            await asyncio.gather(*(self._drain(item) for item in running))
            # Leaving the stack cleans up every runner, which cancels whatever is
            # still running and so aborts its sequences.

    async def _start(
        self,
        instance: Instance,
        index: int,
        stack: contextlib.AsyncExitStack,
        access: AccessWriter | None,
    ) -> _Running:
        settings = instance.settings
        lifecycle = Lifecycle(settings.startup_duration)
        try:
            app = create_app(settings, lifecycle, ranks=instance.ranks)
        except DatasetError as exc:
            raise ServerStartError(f"--dataset: {exc}") from None
        except RecordingError as exc:
            raise ServerStartError(f"--replay: {exc}") from None
        except KVEventsStartError as exc:
            raise ServerStartError(str(exc)) from None
        except FakeMetricsError as exc:
            raise ServerStartError(f"--fake-metrics: {exc.message}", exit_code=2) from None
        try:
            keep_alive = keep_alive_options()
        except KeepAliveError as exc:
            raise ServerStartError(str(exc)) from None
        runner = web.AppRunner(
            app,
            **serve_bodies_encoded(app),
            handler_cancellation=True,
            shutdown_timeout=FINAL_WRITE_GRACE,
            **keep_alive,
            **header_limits(settings),
            **_access_log_options(
                access if settings.access_log_enabled else None,
                frozenset(settings.disable_access_log_for_endpoints),
            ),
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        if settings.grpc_only:  # the app still runs: its start-up starts the engines
            door = await _start_grpc(instance, app, stack)
            assert door is not None
            return _Running(instance, lifecycle, runner, None, door.port, door)
        try:
            if self.listeners is not None:
                sock = self.listeners[index]
            elif settings.uds is not None:
                sock = bind_unix_listener(settings.uds)
                stack.callback(settings.uds.unlink, missing_ok=True)
            else:
                sock = bind_listener(settings.host, settings.port)
        except OSError as exc:
            raise listen_error(instance, exc) from None
        site = GreedyAcceptSite(runner, sock, self._tls(settings, stack))
        await site.start()
        door = await _start_grpc(instance, app, stack)
        return _Running(instance, lifecycle, runner, site, _bound_port(runner, settings.port), door)

    def _tls(self, settings: Settings, stack: contextlib.AsyncExitStack) -> ssl.SSLContext | None:
        """The instance's SSL context (None: plain HTTP), reloaded on change if asked."""
        try:
            context = server_context(settings)
        except TLSError as exc:
            raise ServerStartError(str(exc)) from None
        if context is not None and settings.enable_ssl_refresh:
            refresher = CertificateRefresher(context, settings)
            refresher.start()
            stack.push_async_callback(refresher.stop)
        return context

    def _announce(self) -> None:
        """The start-up panel, or one JSON record per instance when logs are JSON."""
        first = self.instances[0].settings
        if first.latency_model == "step" and first.time_factor_under_load != 1.0:
            logger.warning(
                "time-factor-under-load (%g) does not apply to the step latency model: "
                "latency grows with the batch by the step costs instead",
                first.time_factor_under_load,
            )
        if self.instances[0].settings.log_format == "json":
            for instance, port, grpc_port in zip(
                self.instances, self.ports, self.grpc_ports, strict=True
            ):
                fields = startup_fields(
                    instance.settings, port, self.loop_name, instance.ranks, grpc_port
                )
                if instance.name:
                    fields["instance"] = instance.name
                where = fields["url"] or f"grpc {fields['grpc_address']}"
                message = f"llmsim {fields['version']} serving {fields['model']} at {where}"
                log_with_fields(logger, logging.INFO, message, fields)
        elif len(self.instances) == 1 and not self.instances[0].name:
            render_banner(
                self.console,
                self.instances[0].settings,
                self.ports[0],
                self.loop_name,
                self.grpc_ports[0],
            )
        else:
            pids = [os.getpid()] * len(self.instances)
            render_instances_banner(
                self.console, self.instances, self.ports, pids, f"{self.loop_name}, one process"
            )

    def _start_dashboard(self, running: Sequence[_Running]) -> Dashboard | None:
        """The live view of the first instance (the dashboard shows one engine)."""
        item = running[0]
        stats = item.runner.app.get(LIVE_STATS)
        if stats is None:
            return None
        if len(running) > 1:
            logger.warning("the dashboard shows the first of %d instances", len(running))
        ranks = item.instance.ranks
        if len(ranks) > 1:
            logger.warning(
                "the dashboard shows the load of engine %d of %d; its rates count every engine",
                ranks[0],
                len(ranks),
            )
        settings = item.instance.settings
        dashboard = Dashboard(
            settings,
            item.runner.app[ENGINE],
            stats,
            base_url(settings, item.port),
            self.console,
            item.lifecycle,
        )
        dashboard.start()
        self._dashboard = dashboard
        return dashboard

    async def _drain(self, item: _Running) -> None:
        """Stop taking requests, then give in-flight and queued ones time to finish."""
        item.lifecycle.begin_drain()
        if item.grpc is not None:
            await item.grpc.begin_drain()
        if item.site is not None:
            await item.site.stop()
        engines = item.runner.app[ENGINES]
        timeout = item.instance.settings.shutdown_timeout
        busy = engines.busy
        prefix = f"{item.instance.name}: " if item.instance.name else ""
        if busy:
            logger.info(
                "%sshutting down: waiting up to %s for %d requests",
                prefix,
                format_duration(timeout),
                busy,
            )
        if not await engines.wait_idle(timeout):
            aborted = engines.abort_all()
            logger.warning("%sshutdown timeout reached: aborted %d sequences", prefix, aborted)
        if item.grpc is not None:
            await item.grpc.stop(FINAL_WRITE_GRACE)


async def _start_grpc(
    instance: Instance, app: web.Application, stack: contextlib.AsyncExitStack
) -> GrpcDoor | None:
    """Serve gRPC beside HTTP when ``grpc_port`` is set, or instead of it with ``grpc_only``
    (the CLI checked for the extra)."""
    settings = instance.settings
    if settings.grpc_port is None and not settings.grpc_only:
        return None
    from llmsim.api.grpc.server import GrpcStartError, start_for_app

    try:
        door = await start_for_app(app, settings)
    except GrpcStartError as exc:
        prefix = f"{instance.name}: " if instance.name else ""
        raise ServerStartError(f"{prefix}{exc}") from None
    stack.push_async_callback(door.stop, None)
    return door


@contextlib.contextmanager
def _stop_signals(deadline: StopDeadline) -> Iterator[asyncio.Event]:
    """An event set by the first SIGINT or SIGTERM; the handlers go on exit, so a
    second Ctrl-C during the drain interrupts it. The signal also arms ``deadline``
    without waiting for the loop.

    The signals are unblocked once handled: a supervised child starts with them
    blocked, so one sent while it starts waits for the handler instead of killing it.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    deadline.install()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield stop
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def build_shared_state() -> None:
    """Build what every instance of a process shares (the OpenAPI document) now: a
    supervisor calls it before forking, so its children share the pages instead of
    each building its own copy at start-up. Frozen, the collector leaves those pages
    alone, so they stay shared."""
    openapi_document()
    gc.freeze()


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


def _any_access_log(instances: Sequence[Instance]) -> bool:
    return any(instance.settings.access_log_enabled for instance in instances)


def header_limits(settings: Settings) -> dict[str, Any]:
    """aiohttp's header limits from vLLM's two: the lines may share the whole block, so one
    line (or the request line) takes at most its share of it, and never less than 16 KiB."""
    line = max(MIN_HEADER_LINE, settings.max_header_size // settings.max_header_count)
    return {"max_headers": settings.max_header_count, "max_line_size": line, "max_field_size": line}


def _access_log_options(writer: AccessWriter | None, excluded: frozenset[str]) -> dict[str, Any]:
    """aiohttp's access-log hook, writing through ``writer`` (None: no access log) except for
    requests to the ``excluded`` paths."""
    if writer is None:
        return {"access_log": None}
    return {
        "access_log": logging.getLogger(ACCESS_LOGGER),
        "access_log_class": AccessLogger.writing_to(writer, excluded),
    }
