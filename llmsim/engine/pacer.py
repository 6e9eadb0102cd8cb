"""One timer for all running sequences: tokens are released without waking each request.

Sleeping per token per request costs a timer, a task wake-up and an ``await`` for every
token; with thousands of open streams that is most of the server's time. The pacer
keeps every running sequence's next deadline in one heap and arms a single timer for
the earliest. When it fires, each sequence that is due releases its tokens through a
synchronous :class:`TokenSink` (a socket write), and only the request's own task is
woken, once, when its sequence is done.

Sleep mode acts on every sequence at once: :meth:`Pacer.pause` freezes the schedule and
:meth:`Pacer.resume` shifts it by the time spent paused; :meth:`Pacer.expedite` ends the
sequences the engine cut short now rather than at their next deadline.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Protocol

from llmsim.engine.observer import EngineObserver
from llmsim.engine.sequence import Sequence
from llmsim.engine.timing import LatencyModel

EARLY = 0.0005
"""Tokens due within this much of now go out in the current tick. uvloop's timers have
millisecond resolution and run a callback due in under half a millisecond at once, so
without it a tick just before a deadline would find nothing due and re-arm in a spin."""
MAX_BATCH = 64
"""At most this many overdue tokens of one sequence go out in one batch, so a long
zero-latency answer still lets other requests' writes in between."""


class TokenSink(Protocol):
    """Receives tokens as the engine releases them (streaming responses).

    Called from the pacer's timer, so it must not block: it writes and returns.
    """

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        """``texts`` are the tokens at ``start``, ``start + 1``, ... all due now.

        Return True when the writer is backed up: the engine then waits for
        :meth:`drain` before releasing more of this sequence's tokens.
        """

    def finished(self, sequence: Sequence) -> None:
        """Called after the last token; also for sequences that produced none."""

    async def drain(self) -> None:
        """Wait until the writer has room again."""


class RelaySink:
    """A sink in front of another (a log, a fault, a grouping): what it does not change
    goes straight through, and the pacer's batch limit is the writer's behind it."""

    def __init__(self, inner: TokenSink) -> None:
        self._inner = inner

    @property
    def max_batch(self) -> int:
        return getattr(self._inner, "max_batch", MAX_BATCH)

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        return self._inner.tokens(sequence, start, texts)

    def finished(self, sequence: Sequence) -> None:
        self._inner.finished(sequence)

    async def drain(self) -> None:
        await self._inner.drain()


class Outcome(enum.Enum):
    DONE = "done"
    BACKED_UP = "backed up"


class Pacing:
    """One sequence's progress through its token schedule."""

    __slots__ = ("batch", "deadline", "done", "latency", "position", "sequence", "sink")

    def __init__(
        self,
        sequence: Sequence,
        sink: TokenSink | None,
        latency: LatencyModel,
        deadline: float,
        done: asyncio.Future[Outcome],
    ) -> None:
        self.sequence = sequence
        self.sink = sink
        self.latency = latency
        self.deadline = deadline
        self.position = 0
        self.done = done
        self.batch: int = getattr(sink, "max_batch", MAX_BATCH)
        """Most tokens released at once: a sink whose tokens are costly to write (logprobs)
        asks for smaller batches, so one request's writes leave room for others'."""


class Pacer:
    """Releases the due tokens of every registered sequence from a single timer."""

    def __init__(
        self,
        observer: Callable[[], EngineObserver],
        load: Callable[[], tuple[int, int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._observer = observer
        self._load = load
        self._clock = clock
        self._heap: list[tuple[float, int, Pacing]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused_at: float | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def pause(self) -> None:
        """Release nothing until :meth:`resume` (sleep's ``keep`` mode)."""
        if self._paused_at is not None:
            return
        self._paused_at = self._clock()
        self._disarm()

    def resume(self) -> None:
        """Carry on where the pause froze: every deadline moves by the time spent paused."""
        paused_at, self._paused_at = self._paused_at, None
        if paused_at is None:
            return
        shift = self._clock() - paused_at
        self._disarm()
        heap = []
        for deadline, order, pacing in self._heap:
            pacing.deadline = deadline + shift
            heap.append((pacing.deadline, order, pacing))
        heapq.heapify(heap)
        self._heap = heap
        if heap:
            self._arm(heap[0][0])

    def expedite(self) -> None:
        """End now every queued sequence with nothing left to release (cut short by sleep's
        ``abort``), instead of at its next deadline; paused or not, as vLLM's abort is."""
        ended = [
            entry for entry in self._heap if entry[2].position >= len(entry[2].sequence.output)
        ]
        if not ended:
            return
        for _, _, pacing in ended:
            if not pacing.done.done():
                pacing.done.set_result(Outcome.DONE)
        self._heap = [entry for entry in self._heap if not entry[2].done.done()]
        heapq.heapify(self._heap)
        self._disarm()
        if self._heap:
            self._arm(self._heap[0][0])

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def release_at_once(self, sequence: Sequence) -> None:
        """Release every token of a zero-latency sequence nobody streams, now, as one batch
        of :meth:`pace` releases them (metrics included): with no writes to let in between,
        there is no reason to release them in several."""
        total = len(sequence.output)
        if total:
            self._released(sequence, self._observer(), 0, total, self._clock(), None)

    def pace(self, pacing: Pacing) -> None:
        """Release ``pacing``'s tokens from its deadline on; its ``done`` future says
        when it finished or backed up (then call :meth:`pace` again after a drain).

        Tokens already due go out at once, so a zero-latency request needs no timer.
        """
        now = self._clock()
        if pacing.deadline <= now + EARLY and self._paused_at is None:
            running, max_running = self._load()
            if not self._advance(pacing, now, self._observer(), running, max_running):
                return
        heapq.heappush(self._heap, (pacing.deadline, next(self._order), pacing))
        self._arm(pacing.deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = math.inf

    def _arm(self, when: float) -> None:
        if when >= self._timer_at or self._paused_at is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, when - self._clock()), self._tick)
        self._timer_at = when

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        heap = self._heap
        now = self._clock()
        due: list[Pacing] = []
        horizon = now + EARLY
        while heap and heap[0][0] <= horizon:
            due.append(heapq.heappop(heap)[2])
        if due:
            observer = self._observer()
            running, max_running = self._load()
            for pacing in due:
                if self._advance(pacing, now, observer, running, max_running):
                    heapq.heappush(heap, (pacing.deadline, next(self._order), pacing))
        if heap:
            self._arm(heap[0][0])

    def _advance(
        self,
        pacing: Pacing,
        now: float,
        observer: EngineObserver,
        running: int,
        max_running: int,
    ) -> bool:
        """Release what is due; True if the sequence has more tokens to pace."""
        if pacing.done.done():
            return False  # cancelled: the request went away
        try:
            return self._release(pacing, now, observer, running, max_running)
        except Exception as exc:  # the sink failed: the request sees it
            pacing.done.set_exception(exc)
            return False

    @staticmethod
    def _release(
        pacing: Pacing, now: float, observer: EngineObserver, running: int, max_running: int
    ) -> bool:
        sequence = pacing.sequence
        output = sequence.output
        total = len(output)
        if pacing.position >= total:  # nothing to produce, or cut short: nothing more
            pacing.done.set_result(Outcome.DONE)
            return False
        latency = pacing.latency
        first = pacing.position
        gap = None if first == 0 else now - (sequence.last_token_at or now)
        position = first + 1
        horizon = now + EARLY
        limit = min(total, first + pacing.batch)
        step: float | None = 0.0
        factor = 1.0
        if not latency.instant:
            factor = latency.load_factor(running, max_running)
            step = latency.fixed_inter_token_delay(factor)
        if step is None:  # jittered: every gap is drawn
            deadline = pacing.deadline + latency.inter_token_delay(factor)
            while position < limit and deadline <= horizon:
                position += 1
                deadline += latency.inter_token_delay(factor)
        elif step <= 0.0:
            position = limit
            deadline = pacing.deadline
        else:
            deadline = pacing.deadline + step
            while position < limit and deadline <= horizon:
                position += 1
                deadline += step
        pacing.position = position
        pacing.deadline = deadline
        Pacer._released(sequence, observer, first, position, now, gap)
        backed_up = False
        if pacing.sink is not None:
            backed_up = pacing.sink.tokens(sequence, first, output[first:position])
        if position >= total:
            pacing.done.set_result(Outcome.DONE)
            return False
        if backed_up:
            pacing.done.set_result(Outcome.BACKED_UP)
            return False
        return True

    @staticmethod
    def _released(
        sequence: Sequence,
        observer: EngineObserver,
        first: int,
        position: int,
        now: float,
        gap: float | None,
    ) -> None:
        """Account for the tokens from ``first`` up to ``position`` released ``now``:
        ``gap`` since the previous release (None when ``first`` is the first token)."""
        if first == 0:
            sequence.first_token_at = now
            observer.first_token(sequence, now - sequence.arrival)
        sequence.generated = position
        sequence.last_token_at = now
        overdue = position - first - 1
        if gap is not None or overdue:
            observer.next_tokens(sequence, gap, overdue)
