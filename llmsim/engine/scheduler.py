"""Admission control: the running set, the FIFO waiting queue and LoRA slots.

The scheduler is the single owner of sequence state. Sequences enter through
:meth:`Scheduler.submit`, wait until :meth:`_schedule` admits them (resolving their
``admitted`` future), and leave through :meth:`finish` or :meth:`abort`. After every
change the queue is at a fixed point: nothing in it could run, so a new arrival only
has to be checked on its own.

Policy, as in vLLM's scheduler: the queue is served in arrival order, but a request
whose adapter cannot get a slot is skipped, so it does not block base-model requests
or requests for adapters already in a slot that arrived after it. With a block-level KV
cache (``kv_blocks``) a sequence also needs the blocks of its prompt and output; when
they do not fit, it and everything after it wait (no preemption).

Paused (vLLM's ``pause_scheduler``, used by sleep mode), the queue still takes requests
but admits only the sequences it was told to let through (those already queued, for the
``wait`` mode); :meth:`Scheduler.resume` admits the rest.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Container, Iterable

from llmsim.engine.kv_blocks import KVBlocks
from llmsim.engine.lora import LoraManager
from llmsim.engine.observer import EngineObserver
from llmsim.engine.priority import enqueue
from llmsim.engine.sequence import FinishReason, Sequence, State


class QueueFullError(Exception):
    """The waiting queue cannot take the request's sequences."""


class Scheduler:
    def __init__(
        self,
        *,
        max_running: int,
        max_waiting: int,
        loras: LoraManager,
        observer: EngineObserver,
        clock: Callable[[], float],
        blocks: KVBlocks | None = None,
        by_priority: bool = False,
    ) -> None:
        self.max_running = max_running
        self.by_priority = by_priority
        """The queue in ``(priority, arrival)`` order (:mod:`.priority`), not arrival order."""
        self.max_waiting = max_waiting
        self.loras = loras
        self._observer = observer
        self._clock = clock
        self.running: dict[Sequence, None] = {}
        self.waiting: deque[Sequence] = deque()
        self._running_adapters: Counter[str] = Counter()
        self._waiting_adapters: Counter[str] = Counter()
        self.blocks = blocks
        """The block-level KV cache admission also waits for (``kv_blocks``); None: off."""
        self.paused = False
        self._admissible: set[Sequence] = set()
        """While paused: the waiting sequences that may still start."""

    # -- views ------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_admissible(self) -> int:
        """Waiting sequences a pause still lets start (0 when not paused)."""
        return len(self._admissible)

    def kv_tokens(self) -> int:
        return sum(sequence.kv_tokens for sequence in self.running)

    def num_deferred(self) -> int:
        """Waiting sequences held back by their adapter's slot rather than by capacity
        (vLLM's ``deferred`` waits); counted when asked, never on the request path."""
        can_acquire = self.loras.can_acquire
        return sum(
            1 for seq in self.waiting if seq.adapter is not None and not can_acquire(seq.adapter)
        )

    @property
    def has_adapters(self) -> bool:
        """Whether any running or waiting sequence is for an adapter."""
        return bool(self._running_adapters or self._waiting_adapters)

    def running_adapters(self) -> list[str]:
        return sorted(self._running_adapters)

    def waiting_adapters(self) -> list[str]:
        return sorted(self._waiting_adapters)

    # -- transitions ------------------------------------------------------------
    def submit(self, sequences: list[Sequence]) -> None:
        """Queue a request's sequences and start what can start; all or nothing."""
        if not sequences:
            return
        if self._starts_at_once(sequences):  # the common case: a free slot, nobody queued
            now = self._clock()
            for sequence in sequences:
                self._admit(sequence, now)
            self._observer.scheduler_changed(self)
            return
        if self._would_overflow(sequences):
            raise QueueFullError
        for sequence in sequences:
            if self.by_priority:
                enqueue(self.waiting, sequence, Sequence.queue_key)
            else:
                self.waiting.append(sequence)
            if sequence.adapter is not None:
                self._waiting_adapters[sequence.adapter] += 1
        self._schedule()
        self._observer.scheduler_changed(self)

    def finish(self, sequence: Sequence) -> None:
        """A running sequence produced its last token."""
        if sequence.state is not State.RUNNING:
            return
        self._retire(sequence, sequence.natural_finish)

    def abort(self, sequence: Sequence) -> None:
        """The client went away: drop the sequence wherever it is. Idempotent."""
        if sequence.state is State.FINISHED:
            return
        self._retire(sequence, "abort")

    def abort_waiting(self, request_ids: Container[str] | None = None) -> list[Sequence]:
        """Finish every waiting sequence (of ``request_ids`` only, if given) now with
        ``abort`` (sleep's abort mode, ``/abort_requests``).

        Unlike :meth:`abort` the ``admitted`` future is resolved, not cancelled, so the
        request's task wakes, sees the sequence finished and answers with it.
        """
        aborted = [
            sequence
            for sequence in self.waiting
            if request_ids is None or sequence.request_id in request_ids
        ]
        for sequence in aborted:
            sequence.cut()
            self._retire(sequence, "abort")
        return aborted

    def pause(self, admissible: Iterable[Sequence] = ()) -> None:
        """Admit nothing but ``admissible`` until :meth:`resume`; new requests still queue."""
        self.paused = True
        self._admissible = set(admissible)
        if self._admissible:  # they may start now (a pause before held them back)
            self._schedule()
            self._observer.scheduler_changed(self)

    def resume(self) -> None:
        """Lift a pause: the queue is served again, in arrival order."""
        self.paused = False
        self._admissible = set()
        self._schedule()
        self._observer.scheduler_changed(self)

    # -- internals --------------------------------------------------------------
    def _starts_at_once(self, sequences: list[Sequence]) -> bool:
        """Whether every sequence starts now, as :meth:`_schedule` would start them: slots
        free, nobody waiting ahead, no pause, no adapter or block admission to ask."""
        return (
            not self.waiting
            and not self.paused
            and self.blocks is None
            and len(self.running) + len(sequences) <= self.max_running
            and sequences[0].adapter is None
        )

    def _would_overflow(self, sequences: list[Sequence]) -> bool:
        """Exact because the queue is at a fixed point and a request has one adapter."""
        adapter = sequences[0].adapter
        free = 0 if self.paused else max(self.max_running - len(self.running), 0)
        startable = free if adapter is None or self.loras.can_acquire(adapter) else 0
        must_wait = max(len(sequences) - startable, 0)
        return must_wait > 0 and len(self.waiting) + must_wait > self.max_waiting

    def _retire(self, sequence: Sequence, reason: FinishReason) -> None:
        was_running = sequence.state is State.RUNNING
        if was_running:
            del self.running[sequence]
            if self.blocks is not None:
                self.blocks.free(sequence)
            if sequence.adapter is not None:
                self._uncount(self._running_adapters, sequence.adapter)
                self.loras.release(sequence.adapter)
        else:
            self.waiting.remove(sequence)
            self._admissible.discard(sequence)
            if sequence.adapter is not None:
                self._uncount(self._waiting_adapters, sequence.adapter)
        sequence.state = State.FINISHED
        sequence.finish_reason = reason
        sequence.finished_at = self._clock()
        admitted = sequence.admitted
        if admitted is not None and not admitted.done():
            if sequence.cut_short:  # its task answers with what it has (nothing)
                admitted.set_result(None)
            else:
                admitted.cancel()
        self._observer.sequence_finished(sequence)
        if was_running:
            self._schedule()
        self._observer.scheduler_changed(self)

    def _schedule(self) -> None:
        """Admit waiting sequences in FIFO order, skipping those whose adapter must wait
        (and, while paused, those the pause holds back)."""
        if not self.waiting or len(self.running) >= self.max_running:
            return
        admissible = self._admissible if self.paused else None
        if admissible is not None and not admissible:
            return
        now = self._clock()
        blocks = self.blocks
        skipped: list[Sequence] = []
        while self.waiting and len(self.running) < self.max_running:
            sequence = self.waiting.popleft()
            adapter = sequence.adapter
            held = admissible is not None and sequence not in admissible
            if held or (adapter is not None and not self.loras.can_acquire(adapter)):
                skipped.append(sequence)
                continue
            if blocks is not None and not blocks.admit(sequence):
                self.waiting.appendleft(sequence)  # no room: it and those after it wait
                break
            if admissible is not None:
                admissible.discard(sequence)
            self._admit(sequence, now)
        self.waiting.extendleft(reversed(skipped))

    def _admit(self, sequence: Sequence, now: float) -> None:
        ready = now
        if sequence.adapter is not None:
            ready = self.loras.acquire(sequence.adapter, now)
            self._uncount(self._waiting_adapters, sequence.adapter)
            self._running_adapters[sequence.adapter] += 1
        sequence.state = State.RUNNING
        sequence.scheduled_at = now
        sequence.ready_at = ready
        self.running[sequence] = None
        admitted = sequence.admitted
        if admitted is not None and not admitted.done():
            admitted.set_result(None)

    @staticmethod
    def _uncount(counter: Counter[str], name: str) -> None:
        counter[name] -= 1
        if counter[name] <= 0:
            del counter[name]
