"""Waking a step loop at a step's end, to the microsecond and without spinning.

The event loop's own timers count whole milliseconds (libuv's clock, and epoll's timeout,
rounded up), so a wait for a step's end could overshoot it by up to a millisecond, and
every later step, which starts where the last one really ended, would inherit that. The
portable answer wakes a millisecond early and yields until the deadline
(:func:`sleep_until`); each yield is a turn of the event loop, so a process holding many
instances spent a large share of its CPU on those turns (about 0.17 of a core for 32
instances stepping every 20 ms).

On Linux a step loop instead arms a ``timerfd`` for the step's end: the kernel's
high-resolution timer makes the descriptor readable at the deadline, the event loop's poll
returns at once, and no turn is wasted. :class:`StepWaker` uses it when it can (Linux, an
event loop with ``add_reader``, the real monotonic clock) and :func:`sleep_until`
otherwise; either way the wait ends at or after the deadline, never before.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

TIMER_SLACK = 0.001
"""The event loop's timers fire up to this late (epoll counts whole milliseconds, rounded
up): a wait for a step's end is set this much earlier and finished by yielding."""

_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


async def sleep_until(deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Return at ``deadline`` by ``clock``, not up to a millisecond after it: a step's end
    that the loop's timer overshoots would lengthen every step after it (they start where
    it really ended)."""
    await asyncio.sleep(max(deadline - TIMER_SLACK - clock(), 0.0))  # yields at least once
    while clock() < deadline:  # noqa: ASYNC110 - a sub-millisecond wait no timer can make
        await asyncio.sleep(0.0)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _TimerFd:
    """A non-blocking ``CLOCK_MONOTONIC`` timerfd, armed with absolute deadlines.

    Python 3.13's ``os.timerfd_*`` when present, the C library's functions otherwise.
    """

    def __init__(self) -> None:
        self._set: Callable[[int], None]
        create = getattr(os, "timerfd_create", None)  # Python 3.13+
        if create is not None:
            self.fd = create(time.CLOCK_MONOTONIC, flags=_TFD_NONBLOCK | _TFD_CLOEXEC)
            self._set = self._set_os
            self._closer = weakref.finalize(self, os.close, self.fd)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        fd = create(time.CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._closer = weakref.finalize(self, os.close, fd)
        self._settime: Any = settime
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._set = self._set_libc

    def arm(self, deadline: float) -> None:
        """Fire once at ``deadline`` (``time.monotonic()`` seconds), rounded up to a ns."""
        self._set(max(math.ceil(deadline * 1e9), 1))

    def _set_os(self, ns: int) -> None:
        os.timerfd_settime_ns(self.fd, flags=_TFD_TIMER_ABSTIME, initial=ns)  # type: ignore[attr-defined,unused-ignore]

    def _set_libc(self, ns: int) -> None:
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def drain(self) -> None:
        """Consume the expiry count, so the descriptor is quiet until armed again."""
        try:  # noqa: SIM105 - cheaper than contextlib.suppress, once per step
            os.read(self.fd, 8)
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        self._closer()


class StepWaker:
    """Waits for step ends on the running event loop; one per step loop.

    The timerfd is made on the first wait and registered with that event loop; a wait on
    another loop, or a custom clock (tests that move time by hand), uses
    :func:`sleep_until`. Call :meth:`close` when the step loop stops.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._timer: _TimerFd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = math.inf
        self._usable = clock is time.monotonic and sys.platform.startswith("linux")

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``clock()`` has reached ``deadline`` (having yielded at least once)."""
        loop = asyncio.get_running_loop()
        timer = self._timer_for(loop) if self._usable else None
        if timer is None:
            await sleep_until(deadline, self._clock)
            return
        if deadline <= self._clock():
            await asyncio.sleep(0.0)
            return
        waiter = self._waiter = loop.create_future()
        self._deadline = deadline
        timer.arm(deadline)
        try:
            await waiter
        finally:
            if self._waiter is waiter:  # a cancelled wait's cleanup may come after a new one
                self._waiter = None

    def _timer_for(self, loop: asyncio.AbstractEventLoop) -> _TimerFd | None:
        if self._timer is not None:
            return self._timer if self._loop is loop else None
        try:
            timer = _TimerFd()
        except (OSError, AttributeError):  # no timerfd here: wait the portable way
            self._usable = False
            return None
        try:
            loop.add_reader(timer.fd, self._fired)
        except (NotImplementedError, RuntimeError, OSError):
            timer.close()
            self._usable = False
            return None
        self._timer, self._loop = timer, loop
        return timer

    def _fired(self) -> None:
        assert self._timer is not None
        self._timer.drain()
        waiter = self._waiter
        # An expiry of an earlier arming (its wait cancelled) must not end this one early.
        if waiter is not None and not waiter.done() and self._clock() >= self._deadline:
            waiter.set_result(None)

    def close(self) -> None:
        """Unregister and close the timerfd (the next wait makes a new one)."""
        timer, loop = self._timer, self._loop
        self._timer = self._loop = None
        if timer is None or loop is None:
            return
        if not loop.is_closed():
            loop.remove_reader(timer.fd)
        timer.close()
