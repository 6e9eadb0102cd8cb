"""The last word of a stop signal: the process ends in bounded time, even if its loop is stuck.

The first SIGINT or SIGTERM starts the graceful drain on the event loop. A drain needs the
loop to turn, and a handler that blocks it (a runaway computation, a blocking call) would
hold the process for good. So the same signal also runs a plain Python-level handler in
the main thread, which Python runs between bytecodes and inside interruptible calls
(``time.sleep``, lock waits, long regular-expression matches) whether or not the loop
turns. It arms :mod:`faulthandler`'s timer: a C thread that needs neither the loop nor the
GIL and, if the process is still running once the shutdown timeout and a short grace have
passed, writes every thread's stack to standard error (where it hung) and exits with
status 1. The handler does nothing else: the loop puts the default dispositions back when
it starts the drain (a second Ctrl-C then stops at once, as before), and until then a
second signal, such as a terminal's SIGINT next to a supervisor's SIGTERM, is the same stop.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import IO, Any

FORCE_EXIT_GRACE = 3.0
"""Beyond the shutdown timeout, how long the drain and clean-up may take before the forced
exit. Less than the supervisor's grace for its children, so a child ends on its own."""


class StopDeadline:
    """Arms the forced exit when a stop signal arrives; disarmed once shutdown is done."""

    def __init__(self, timeout: float, signals: Sequence[signal.Signals]) -> None:
        self.timeout = timeout + FORCE_EXIT_GRACE
        self.signals = tuple(signals)
        self.armed = False
        self._devnull: IO[str] | None = None

    def install(self) -> None:
        """Run :meth:`on_signal` on each stop signal, besides the event loop's own handler.

        Call it after ``loop.add_signal_handler``: the loop is woken through its wake-up
        file descriptor and dispatches its callback from there; only the Python-level
        handler, a no-op, is replaced.
        """
        for signum in self.signals:
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """A stop signal: start the clock (once)."""
        self.arm()

    def arm(self) -> None:
        if self.armed:
            return
        self.armed = True
        faulthandler.dump_traceback_later(
            self.timeout, repeat=False, file=self._stderr(), exit=True
        )

    def disarm(self) -> None:
        """Shutdown finished in time: no forced exit (the process may go on running)."""
        if self.armed:
            faulthandler.cancel_dump_traceback_later()
            self.armed = False
        if self._devnull is not None:
            self._devnull.close()
            self._devnull = None

    def _stderr(self) -> Any:
        """Standard error if it has a file descriptor (the stacks go there), else nothing."""
        stream = sys.stderr
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            if stream is not None:
                stream.fileno()
                return stream
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - kept open while armed
        return self._devnull
