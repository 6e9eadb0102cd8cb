"""The step engine on the event loop: one task runs step after step while there is work.

Each step is planned at its start, lasts what :class:`~llmsim.engine.step.costs.StepCosts`
says, and at its end every sequence that finished a decode or its last prefill chunk emits
one token through its :class:`~llmsim.engine.pacer.TokenSink`. Time only moves forward:
a step ends at its modelled end or, when the loop gets there late (a busy event loop, a
stalled process), when it gets there, and the next step starts where it ended: the loop's
own work between two steps (writing tokens, planning) is part of the modelled duration, as
a server's CPU work is. A loop later than one step's duration (a stall) starts the next
step when it gets there instead. Either way a sequence joins only a step that starts at or
after its arrival (the step scheduler holds back later arrivals), so every token, queue
and phase timestamp is a time the server really reached; and while others run, one that
reached the engine after the step in flight was due to end (its own HTTP handling and
tokenization kept the loop from getting there) joins not the step that follows but the one
after, as it would have on time and as it does in virtual time.

Sleep mode's ``keep`` pause lets the step in flight end, then plans nothing until
:meth:`StepLoop.resume`; its ``abort`` ends a sequence at once with :meth:`StepLoop.finish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from llmsim.engine.observer import EngineObserver
from llmsim.engine.pacer import TokenSink
from llmsim.engine.sequence import Sequence
from llmsim.engine.step.kv_cache import StepSequence
from llmsim.engine.step.plan import StepPlan, StepResult
from llmsim.engine.step.step_engine import StepEngine, StepObserver
from llmsim.engine.step.wakeup import StepWaker

MAX_COALESCED_STEPS = 64
"""Steps that are already due when planned (zero latency, or a loop busier than the steps)
run back to back, and their tokens go out in one write per sequence; after this many the
loop yields."""


@dataclass(slots=True)
class _Active:
    seq: StepSequence
    sink: TokenSink | None
    done: asyncio.Future[None]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class StepLoop:
    def __init__(
        self,
        engine: StepEngine,
        observer: Callable[[], EngineObserver],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self._observer = observer
        self._clock = clock
        self._waker = StepWaker(clock)
        self._active: dict[Sequence, _Active] = {}
        self._pending: dict[Sequence, list[int]] = {}
        self._firsts: list[Sequence] = []
        """Sequences whose first token is pending: written before the running ones'."""
        self._loading: dict[Sequence, asyncio.Future[None]] = {}
        """Sequences waiting for their adapter to load, before they join the engine."""
        """Tokens emitted but not yet written: sequence -> [first position, count]."""
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.step_observers: list[StepObserver] = []
        self._resumed: asyncio.Event | None = None
        """Set while the loop may plan steps; cleared by :meth:`pause`."""
        self._paused_at: float | None = None
        self._stepping: asyncio.Future[None] | None = None
        """Resolved when the step in flight (between its plan and its end) is over."""

    async def run(self, sequence: Sequence, sink: TokenSink | None) -> None:
        """Hand ``sequence`` to the engine; return once its last token is out.

        Cancelled (the client went away), the sequence leaves the engine and frees its
        blocks at once.
        """
        loop = asyncio.get_running_loop()
        if sequence.ready_at is not None and sequence.ready_at > self._clock():
            await self._load_adapter(sequence, loop)
            if sequence.cut_short:
                return  # a pause's abort came while the adapter loaded
        seq = self.engine.add(sequence)
        seq.entered = self._clock()
        active = _Active(seq, sink, loop.create_future())
        self._active[sequence] = active
        self._kick()
        try:
            await active.done
        except BaseException:
            self.abort(sequence)
            raise

    def abort(self, sequence: Sequence) -> None:
        self._pending.pop(sequence, None)
        active = self._active.pop(sequence, None)
        if active is not None:
            self.engine.abort(active.seq)
            self._kick()

    async def _load_adapter(self, sequence: Sequence, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the sequence's adapter is loaded, or until :meth:`finish` ends it."""
        assert sequence.ready_at is not None
        loading = self._loading[sequence] = loop.create_future()
        timer = loop.call_later(sequence.ready_at - self._clock(), _resolve, loading)
        try:
            await loading
        finally:
            timer.cancel()
            self._loading.pop(sequence, None)

    def finish(self, sequence: Sequence) -> None:
        """End ``sequence`` now with the tokens it has (a pause's abort): those emitted are
        written, its blocks are freed and :meth:`run` returns."""
        loading = self._loading.get(sequence)
        if loading is not None:
            _resolve(loading)  # no need to wait for its adapter any more
        self._write(sequence)
        active = self._active.pop(sequence, None)
        if active is None:
            return
        self.engine.abort(active.seq)
        if not active.done.done():
            active.done.set_result(None)

    @property
    def paused(self) -> bool:
        return self._resumed is not None and not self._resumed.is_set()

    async def pause(self) -> None:
        """Plan no step until :meth:`resume` (sleep's ``keep``); return once the step in
        flight, if any, has ended and written its tokens."""
        if self._resumed is None:
            self._resumed = asyncio.Event()
        if self._resumed.is_set() or self._paused_at is None:
            self._paused_at = self._clock()
        self._resumed.clear()
        stepping = self._stepping
        if stepping is not None:
            await asyncio.shield(stepping)

    def resume(self) -> None:
        if self._resumed is None or self._resumed.is_set():
            return
        if self._paused_at is not None:
            self.engine.scheduler.paused(self._clock() - self._paused_at)
            self._paused_at = None
        self._resumed.set()
        if self.engine.has_work():
            self._kick()

    def reset_prefix_cache(self) -> int:
        """Drop the prefix cache. While paused, no step is in flight, so the frozen
        sequences lose their blocks too and recompute on resume, as vLLM's sleep resets
        running requests with the cache."""
        if self.paused:
            self.engine.preempt_running()
        return self.engine.reset_prefix_cache()

    async def close(self) -> None:
        """Stop the loop task (server shutdown), so no pending task outlives the event loop."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._waker.close()

    # -- the loop ---------------------------------------------------------------
    def _kick(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        try:
            await self._steps()
        finally:
            self._waker.close()  # its timerfd belongs to this event loop

    async def _steps(self) -> None:
        engine, clock = self.engine, self._clock
        assert self._wake is not None
        wake = self._wake
        coalesced = 0
        run: StepPlan | None = None
        """A zero-length pure-decode step whose like may follow at once (zero latency)."""
        last_end, last_duration, due = -math.inf, 0.0, -math.inf
        """When the previous step really ended, how long it was modelled to last, and when it
        was due to end."""
        while True:
            resumed = self._resumed
            if resumed is not None and not resumed.is_set():
                self._flush()
                await resumed.wait()
                coalesced, run, last_end = 0, None, -math.inf
                continue
            if not engine.has_work():
                self._flush()
                wake.clear()
                await wake.wait()
                coalesced, run, last_end = 0, None, -math.inf
                continue
            now = clock()
            # where the previous step ended, unless the loop got here more than a step late
            start = last_end if now - last_end <= last_duration else now
            if run is not None:
                if coalesced >= MAX_COALESCED_STEPS:  # yield, then look again
                    self._flush()
                    coalesced = 0
                    await asyncio.sleep(0.0)
                    continue
                # the same decode step again and again, applied in one go
                steps = self._decode_run(run, start, MAX_COALESCED_STEPS - coalesced)
                if steps:
                    coalesced += steps
                    continue
                run = None  # the batch changed: plan a step
            plan, duration = engine.begin_step(start, self._entered_by(start, last_end, due))
            if plan.empty:
                engine.end_step(plan, start)
                if plan.preempted or plan.prefix_queries:  # counted though nothing ran
                    for observer in self.step_observers:
                        observer.step_done(plan, 0.0)
                if not plan.preempted:  # nothing fits until something leaves or arrives
                    self._flush()
                    wake.clear()
                    await self._idle(wake, engine.next_ready())
                    coalesced, last_end = 0, -math.inf
                continue
            end = start + duration
            now = clock()
            waited = end > now or coalesced >= MAX_COALESCED_STEPS
            if waited:
                coalesced = 0
                end = await self._step_end(end)
            else:  # already due: it ends now, its tokens join the pending writes
                coalesced += 1
                end = now
            result = engine.end_step(plan, end)
            self._dispatch(result, end)
            if waited:  # out at once, at the time they carry, before the next plan
                self._flush()
            for observer in self.step_observers:
                observer.step_done(plan, duration)
            last_end, last_duration, due = end, duration, start + duration
            if duration == 0.0:  # zero latency: runs of decode steps may follow
                run = plan

    def _entered_by(self, start: float, last_end: float, due: float) -> float:
        """Who may join the step starting at ``start``: the sequences that reached the
        engine by then, or, after a step that ended late while others run, by the time it
        was due. The step still starts when the loop got there, but a request whose own
        handling (HTTP, tokenization) made the loop late joins the step after, as it would
        have had the loop been on time, and as it does in virtual time."""
        if last_end == -math.inf or not self.engine.num_running:
            return start  # nothing in flight: a step for whoever is here
        return min(due, start)

    async def _step_end(self, end: float) -> float:
        """Write what is pending and wait for a step's modelled ``end``; return when it
        really ended: ``end``, or later when the loop woke late (then the next step is
        planned from there)."""
        self._flush()
        clock = self._clock
        stepping = self._stepping = asyncio.get_running_loop().create_future()
        try:
            await self._waker.sleep_until(end)
        finally:
            # a pause waiting on it wakes after this step ends (no await till then)
            self._stepping = None
            stepping.set_result(None)
        return max(end, clock())

    def _decode_run(self, plan: StepPlan, now: float, limit: int) -> int:
        """Apply up to ``limit`` zero-length decode steps like ``plan``, ending at ``now``;
        return how many ran (0 when the next step may differ)."""
        steps, result = self.engine.repeat_decode(plan, now, limit)
        if steps:
            self._dispatch_run(result)
            for observer in self.step_observers:
                observer.decode_run_done(result.segments)
        return steps

    async def _idle(self, wake: asyncio.Event, until: float | None) -> None:
        """Wait for new work, or until a sequence waiting on time (KV transfer, override) can go on."""
        if until is None:
            await wake.wait()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), max(until - self._clock(), 0.0))

    def _dispatch(self, result: StepResult, now: float) -> None:
        """Report the tokens of a step ending at ``now`` to the observer; queue them for
        sinks (written at the next yield, so back-to-back steps make one write)."""
        observer = self._observer()
        pending = self._pending
        for seq in result.emitted:
            sequence = seq.sequence
            position = sequence.generated - 1
            if position == 0:
                observer.first_token(sequence, now - sequence.arrival)
                self._firsts.append(sequence)
            else:
                previous = seq.previous_token_at
                observer.next_tokens(sequence, None if previous is None else now - previous, 0)
            span = pending.get(sequence)
            if span is None:
                pending[sequence] = [position, 1]
            else:
                span[1] += 1
        self._finish(result)

    def _dispatch_run(self, result: StepResult) -> None:
        """A zero-latency run's tokens, every one 0 s after the one before: one observer call
        for them all, and each sequence's tokens out at once after any it had queued."""
        counts = result.counts
        assert counts is not None
        self._observer().zero_gap_tokens(sum(counts))
        pending = self._pending
        for seq, count in zip(result.emitted, counts, strict=True):
            sequence = seq.sequence
            span = pending.get(sequence)
            if span is None:
                self._send(sequence, sequence.generated - count, count)
            else:
                span[1] += count
        self._finish(result)

    def _finish(self, result: StepResult) -> None:
        for seq in result.finished:
            sequence = seq.sequence
            self._write(sequence)
            active = self._active.pop(sequence, None)
            if active is not None and not active.done.done():
                active.done.set_result(None)

    def _flush(self) -> None:
        """Write every sequence's pending tokens, one write per sequence. First tokens go
        out first: the step emits them at its end, and the time a front end spends on the
        running streams' output is modelled (``frontend_time_per_running_request``), so this
        process's real time for it must not come on top."""
        if self._firsts:
            for sequence in self._firsts:
                self._write(sequence)
            self._firsts.clear()
        for sequence in list(self._pending):
            self._write(sequence)

    def _write(self, sequence: Sequence) -> None:
        span = self._pending.pop(sequence, None)
        if span is not None:
            self._send(sequence, span[0], span[1])

    def _send(self, sequence: Sequence, first: int, count: int) -> None:
        """Tokens ``first`` to ``first + count`` to the sequence's sink, in one write."""
        active = self._active.get(sequence)
        if active is None or active.sink is None:
            return
        try:
            active.sink.tokens(sequence, first, sequence.output[first : first + count])
        except Exception as exc:  # the sink failed (a cut stream, a gone client)
            self.abort(sequence)
            if not active.done.done():
                active.done.set_exception(exc)
