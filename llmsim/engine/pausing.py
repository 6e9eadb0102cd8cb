"""Sleep mode's side of the engine: vLLM's ``pause_scheduler`` and ``resume_scheduler``.

Requests keep queueing while nothing new starts, and what is in flight is aborted with the
tokens it has, run to completion, or frozen where it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import Literal, get_args

from llmsim.engine.pacer import Pacer
from llmsim.engine.scheduler import Scheduler
from llmsim.engine.step.step_loop import StepLoop

PauseMode = Literal["abort", "wait", "keep"]
PAUSE_MODES: tuple[str, ...] = get_args(PauseMode)
ABORT_GRACE = 1.0
"""How long an ``abort`` pause waits for the aborted requests to leave (a stream whose
client does not read may hold its sequence longer; it ends when the client drains)."""
DRAIN_POLL = 0.005


class Pausing:
    """The engine's pause, resume and aborts (mixed into :class:`~llmsim.engine.Engine`)."""

    scheduler: Scheduler
    pacer: Pacer
    step: StepLoop | None

    async def pause(self, mode: str = "abort") -> None:
        """Stop scheduling as vLLM's ``pause_scheduler(mode)`` does; new requests queue.

        ``abort`` ends everything in flight now with the tokens it has (finish reason
        ``abort``); ``wait`` lets running and already queued requests finish and returns
        once they have; ``keep`` freezes them where they are until :meth:`resume`.
        """
        if mode not in PAUSE_MODES:
            raise ValueError(f"Invalid pause mode: {mode}")
        scheduler = self.scheduler
        if mode == "keep":
            scheduler.pause()
            self.pacer.pause()
            if self.step is not None:
                await self.step.pause()
            return
        scheduler.pause(scheduler.waiting if mode == "wait" else ())
        if mode == "abort":
            self.abort_in_flight()
        self._unfreeze()  # only new work is held back (a ``keep`` pause may come before)
        await self.wait_drained(ABORT_GRACE if mode == "abort" else None)

    def resume(self) -> None:
        """Lift a pause: frozen sequences carry on and the queue is served again."""
        self._unfreeze()
        self.scheduler.resume()

    def _unfreeze(self) -> None:
        self.pacer.resume()
        if self.step is not None:
            self.step.resume()

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until nothing runs and no waiting sequence may start (a pause holds the
        rest); False if ``timeout`` passed first or the pause was lifted meanwhile."""
        scheduler = self.scheduler

        def settled() -> bool:
            lifted = not scheduler.paused
            return lifted or not (scheduler.num_running or scheduler.num_admissible)

        return await wait_until(settled, timeout, DRAIN_POLL) and scheduler.paused

    def abort_in_flight(self, request_ids: Collection[str] | None = None) -> int:
        """End every running and waiting sequence (of ``request_ids`` only, if given) now
        with finish reason ``abort``: the tokens already produced are its answer (vLLM's
        abort on pause, ``/abort_requests``). Their requests answer at once; return how
        many sequences were aborted."""
        chosen = None if request_ids is None else set(request_ids)
        count = len(self.scheduler.abort_waiting(chosen))
        for sequence in list(self.scheduler.running):
            if chosen is not None and sequence.request_id not in chosen:
                continue
            if sequence.output and sequence.generated >= len(sequence.output):
                continue  # its last token is out: it finishes as it is
            if self.step is not None:
                self.step.finish(sequence)  # tokens already produced are written first
            sequence.cut()
            count += 1
        self.pacer.expedite()
        return count

    def abort_all(self) -> int:
        """Cancel every running and waiting sequence (shutdown timeout); return how many."""
        live = [*self.scheduler.running, *self.scheduler.waiting]
        for sequence in live:
            if sequence.task is not None and not sequence.task.done():
                sequence.task.cancel()
            else:
                self.scheduler.abort(sequence)
        return len(live)


async def wait_until(settled: Callable[[], bool], timeout: float | None, poll: float) -> bool:
    """Poll ``settled`` every ``poll`` seconds; False if ``timeout`` passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not settled():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll)
    return True
