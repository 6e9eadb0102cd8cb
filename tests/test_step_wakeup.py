"""The step loop's waker: never before the deadline, on a timerfd where Linux has one."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from llmsim.engine.step.wakeup import StepWaker, sleep_until

LINUX = sys.platform.startswith("linux")


async def test_waits_until_the_deadline_and_not_before() -> None:
    waker = StepWaker()
    try:
        for delay in (0.0005, 0.002, 0.0):
            deadline = time.monotonic() + delay
            await waker.sleep_until(deadline)
            assert time.monotonic() >= deadline
    finally:
        waker.close()


@pytest.mark.skipif(not LINUX, reason="timerfd is Linux's")
async def test_uses_one_timerfd_and_closes_it() -> None:
    waker = StepWaker()
    await waker.sleep_until(time.monotonic() + 0.001)
    timer = waker._timer
    assert timer is not None
    fd = timer.fd
    await waker.sleep_until(time.monotonic() + 0.001)
    assert waker._timer is timer  # armed again, not made again
    waker.close()
    assert waker._timer is None
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


async def test_a_cancelled_wait_does_not_end_the_next_one_early() -> None:
    waker = StepWaker()
    try:
        early = asyncio.ensure_future(waker.sleep_until(time.monotonic() + 0.001))
        await asyncio.sleep(0)
        early.cancel()
        deadline = time.monotonic() + 0.003
        await waker.sleep_until(deadline)
        assert time.monotonic() >= deadline
    finally:
        waker.close()


async def test_a_custom_clock_waits_the_portable_way() -> None:
    now = [100.0]

    def clock() -> float:
        now[0] += 0.001
        return now[0]

    waker = StepWaker(clock)
    await waker.sleep_until(100.004)
    assert waker._timer is None
    assert now[0] >= 100.004


async def test_sleep_until_yields_even_when_due() -> None:
    ran = []
    asyncio.get_running_loop().call_soon(ran.append, 1)
    await sleep_until(time.monotonic() - 1.0)
    assert ran == [1]
