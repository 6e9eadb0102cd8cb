"""The ``mp`` and ``workers`` backends: child processes supervised by the parent.

Each child serves a group of instances on one event loop: one instance per child with
``mp``, a share of them per worker with ``workers``. The parent binds every port first
(so a clash fails before anything starts and port 0 is resolved), forks the children,
which serve on their inherited sockets, prints one start-up panel with the children's
PIDs and then only watches: SIGINT or SIGTERM stops every child; a child that exits on
its own is reported with its instances, the others are stopped and the exit status is
1. Nothing is restarted. Children are stopped by PID (SIGTERM, then SIGKILL after their
shutdown timeout) and, on Linux, get SIGTERM if the parent dies, so none outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from rich.console import Console

from llmsim.console.banner import render_instances_banner
from llmsim.server.listener import bind_listener
from llmsim.server.runner import (
    STOP_SIGNALS,
    Server,
    ServerStartError,
    build_shared_state,
    listen_error,
)
from llmsim.settings.instances import Instance

logger = logging.getLogger("llmsim.supervisor")

WATCHED = frozenset({*STOP_SIGNALS, signal.SIGCHLD})
POLL_SECONDS = 0.5
KILL_GRACE = 5.0
"""Beyond a child's own shutdown timeout, how long it may take to exit before SIGKILL."""
PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """A child process and the instances it serves (in order, one port each)."""

    number: int
    instances: tuple[Instance, ...]
    pid: int
    ports: tuple[int, ...]

    def describe(self) -> str:
        """``instance NAME (pid P)``, or ``worker N (pid P: instances A, B)``."""
        if len(self.instances) == 1:
            return f"instance {self.instances[0].name} (pid {self.pid})"
        names = ", ".join(instance.name for instance in self.instances)
        return f"worker {self.number} (pid {self.pid}: instances {names})"


class Supervisor:
    """Run each group of instances in its own process until a signal or a child's exit.

    ``groups`` holds the instances of each child: one each for the ``mp`` backend.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[Instance]],
        console: Console | None = None,
        *,
        how: str = "one process each",
    ) -> None:
        self.groups = [tuple(group) for group in groups if group]
        self.instances = [instance for group in self.groups for instance in group]
        self.how = how
        self.console = console or Console(stderr=False)
        self.errors = Console(stderr=True)
        self.children: list[Child] = []

    @property
    def pids(self) -> list[int]:
        """Each instance's process, in the order of the instances."""
        return [child.pid for child in self.children for _ in child.instances]

    def run(self) -> int:
        """Serve; the exit status: 0 after a stop signal, 1 if a child exited on its own."""
        listeners = bind_listeners(self.instances)
        build_shared_state()
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        live: dict[int, Child] = {}
        try:
            try:
                self._fork_all(listeners, previous_mask, live)
            finally:
                for listener in listeners:
                    listener.close()
            render_instances_banner(
                self.console,
                self.instances,
                [port for child in self.children for port in child.ports],
                self.pids,
                self.how,
            )
            failed = self._watch(live)
            return 1 if failed else 0
        finally:
            self._stop(live)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)

    # -- starting ---------------------------------------------------------------
    def _fork_all(
        self,
        listeners: Sequence[socket.socket],
        previous_mask: Iterable[int],
        live: dict[int, Child],
    ) -> None:
        parent = os.getpid()
        end = 0
        for number, group in enumerate(self.groups, start=1):
            start, end = end, end + len(group)
            own = listeners[start:end]
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as exc:
                raise ServerStartError(f"{group[0].name}: cannot start a process: {exc}") from None
            if pid == 0:
                others = [*listeners[:start], *listeners[end:]]
                _child_main(group, own, others, previous_mask, parent)
            ports = tuple(int(listener.getsockname()[1]) for listener in own)
            child = Child(number, group, pid, ports)
            self.children.append(child)
            live[pid] = child

    # -- watching ---------------------------------------------------------------
    def _watch(self, live: dict[int, Child]) -> bool:
        """Wait for a stop signal (False) or a child's exit (True, after reporting it)."""
        while live:
            info = signal.sigtimedwait(WATCHED, POLL_SECONDS)
            # A Ctrl-C in a terminal reaches the children too, and they may exit before
            # this loop sees its own SIGINT: a pending stop signal is a stop, not a failure.
            stop = info is not None and info.si_signo in STOP_SIGNALS
            if not stop and signal.sigpending() & set(STOP_SIGNALS):
                # Take it now: it is this stop, not a second Ctrl-C to hurry the drain.
                stop = signal.sigtimedwait(STOP_SIGNALS, 0) is not None
            if stop:
                return False
            exited = self._reap(live)
            for child, status in exited:
                self._report(child, status)
            if exited:
                return True
        return True

    def _report(self, child: Child, status: int) -> None:
        how = f"was killed by {_signal_name(-status)}" if status < 0 else f"exited with {status}"
        self.errors.print(
            f"[bold red]error:[/bold red] {child.describe()} {how}; stopping the others",
            highlight=False,
        )

    def _reap(self, live: dict[int, Child]) -> list[tuple[Child, int]]:
        exited = []
        for pid, child in list(live.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                del live[pid]
                exited.append((child, os.waitstatus_to_exitcode(status)))
        return exited

    # -- stopping ---------------------------------------------------------------
    def _stop(self, live: dict[int, Child]) -> None:
        """SIGTERM every live child, wait for their drain, SIGKILL what is left."""
        _signal_all(live, signal.SIGTERM)
        timeout = max(
            (i.settings.shutdown_timeout for c in live.values() for i in c.instances), default=0
        )
        deadline = time.monotonic() + timeout + KILL_GRACE
        while live and time.monotonic() < deadline:
            remaining = max(min(POLL_SECONDS, deadline - time.monotonic()), 0.01)
            info = signal.sigtimedwait(WATCHED, remaining)
            self._reap(live)
            if info is not None and info.si_signo in STOP_SIGNALS:
                break  # a second Ctrl-C or SIGTERM: do not wait for the drain
        if live:
            logger.warning("killing %d instances that did not stop in time", len(live))
        _signal_all(live, signal.SIGKILL)
        for pid in list(live):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            del live[pid]


def bind_listeners(instances: Sequence[Instance]) -> list[socket.socket]:
    """A listening socket per instance, or :class:`ServerStartError` (none left open)."""
    listeners: list[socket.socket] = []
    try:
        for instance in instances:
            listeners.append(_bind(instance))
    except ServerStartError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _bind(instance: Instance) -> socket.socket:
    try:
        return bind_listener(instance.settings.host, instance.settings.port)
    except OSError as exc:
        raise listen_error(instance, exc) from None


def _signal_all(live: dict[int, Child], signum: int) -> None:
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _child_main(
    instances: Sequence[Instance],
    listeners: Sequence[socket.socket],
    others: Sequence[socket.socket],
    previous_mask: Iterable[int],
    parent: int,
) -> NoReturn:
    """The forked child: serve its instances on their sockets, then exit without cleanup."""
    code = 1
    try:
        for other in others:
            other.close()
        _die_with_parent(parent)
        # SIGINT and SIGTERM stay blocked until the server handles them.
        signal.pthread_sigmask(signal.SIG_SETMASK, {*previous_mask, *STOP_SIGNALS})
        Server(instances, listeners=listeners, announce=False).run()
        code = 0
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        code = 130
    except ServerStartError as exc:  # a refused setting or port: one line, no traceback
        logger.error("%s cannot start: %s", _names(instances), exc)
        code = exc.exit_code
    except BaseException:
        logger.exception("%s failed", _names(instances))
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _names(instances: Sequence[Instance]) -> str:
    """``instance a``, or ``instances a, b`` for a worker's share."""
    names = ", ".join(instance.name for instance in instances)
    return f"instance {names}" if len(instances) == 1 else f"instances {names}"


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the parent dies; exit if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
