"""Run the step engine in virtual time: no event loop, no sleeping, exact and repeatable.

Used by the documentation plots and the profile predictions, and handy in tests::

    run = VirtualRun(StepEngine(num_blocks=512, costs=costs))
    run.arrive(virtual_sequence("a", 128, 64), at=0.0)
    run.until_idle()
    run.samples[-1].time   # when the last step ended
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from llmsim.engine.block_hash import output_token_id
from llmsim.engine.lora import LoraManager
from llmsim.engine.sequence import Sequence
from llmsim.engine.step.costs import FrontEnd
from llmsim.engine.step.kv_cache import StepSequence
from llmsim.engine.step.lazy_decode import LazyDecoders
from llmsim.engine.step.plan import StepPlan, StepResult
from llmsim.engine.step.step_engine import StepEngine


def virtual_sequence(
    name: str,
    prompt: int | Seq[int],
    output_tokens: int,
    *,
    arrival: float = 0.0,
    adapter: str | None = None,
) -> Sequence:
    """A sequence for virtual runs: ``prompt`` is a token count (distinct ids) or the ids."""
    ids: Seq[int]
    if isinstance(prompt, int):
        ids = [output_token_id(f"{name}:{k}") for k in range(prompt)]
    else:  # read, never changed: a list or a range is taken as it is
        ids = prompt if isinstance(prompt, (list, range)) else list(prompt)
    return Sequence(
        request_id=name,
        index=0,
        adapter=adapter,
        prompt_tokens=len(ids),
        output=[" x"] * output_tokens,
        natural_finish="length",
        stop_reason=None,
        max_tokens=output_tokens,
        n=1,
        arrival=arrival,
        admitted=None,  # never awaited in virtual time
        prompt_token_ids=ids,
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """The engine's state at the end of one step."""

    time: float
    duration: float
    running: int
    waiting: int
    usage: float
    preemptions: int
    tokens: int
    decode: int


@dataclass
class VirtualRun:
    engine: StepEngine
    samples: list[Sample] = field(default_factory=list)
    finished: list[Sequence] = field(default_factory=list)
    now: float = 0.0
    _arrivals: list[tuple[float, int, Sequence, bool]] = field(default_factory=list)
    """(entry, order, sequence, whether the front end's load delay is counted yet)"""
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _frontend: FrontEnd = field(default_factory=FrontEnd)
    last_result: StepResult | None = None
    """The last step's result: who emitted a token, who finished."""
    lazy: bool = False
    """Keep decoding sequences lazy between the steps that change them
    (:mod:`~llmsim.engine.step.lazy_decode`): the same run, faster, but the counters of a
    running sequence are only up to date when it finishes."""
    keep: bool = True
    """Keep every step's :class:`Sample` and finished sequence (False for a caller that
    reads :attr:`last_result` after each step instead)."""
    loras: LoraManager | None = None
    """LoRA slots, as the live request scheduler holds them: a sequence naming an adapter
    joins the engine once its adapter has a slot (in arrival order, skipping those whose
    adapter must wait) and is loaded; it frees the slot when it finishes."""
    _for_slot: deque[Sequence] = field(default_factory=deque)
    """Arrived sequences waiting for their adapter's slot."""
    _slotted: set[Sequence] = field(default_factory=set)
    """Sequences holding a slot while their adapter loads (back in the arrivals until then)."""

    def __post_init__(self) -> None:
        if self.lazy:
            self.engine.scheduler.lazy = LazyDecoders(self.engine.kv)
            self.engine.kv.defer_prompts = True

    @property
    def pending(self) -> int:
        """Requests sent but not yet in the engine (front end, LoRA slot or load)."""
        return len(self._arrivals) + len(self._for_slot)

    def next_event(self) -> float | None:
        """When this run next does something: now with work to do, else when the next
        request reaches the engine; None when idle with nothing on the way."""
        if self.engine.has_work():
            return self.now
        if self._arrivals:
            return max(self.now, self._arrivals[0][0])
        return self.now if self._for_slot else None

    def arrive(self, sequence: Sequence, at: float) -> None:
        """``sequence`` is sent at ``at``; it reaches the engine once through the front end.

        Call it in the order of ``at``, as requests arrive.
        """
        sequence.arrival = at
        entry = self._frontend.entry(at, self.engine.costs)
        heapq.heappush(self._arrivals, (entry, next(self._order), sequence, False))

    def step(self) -> StepPlan:
        """Admit what has arrived, run one step (or jump to the next arrival when idle)."""
        self._admit()
        if not self.engine.has_work() and self._arrivals:
            self.now = max(self.now, self._arrivals[0][0])
            self._admit()
        plan, duration = self.engine.begin_step(self.now)
        arrival = self.engine.next_ready() if plan.empty else None
        if arrival is not None:  # only KV transfers in flight: jump ahead
            upcoming = [arrival, *(entry[0] for entry in self._arrivals[:1])]
            self.now = max(self.now, min(upcoming))
        self.now += duration
        result = self.last_result = self.engine.end_step(plan, self.now)
        if self.loras is not None and result.finished:
            self._release(result.finished)
        if not self.keep:
            return plan
        self.finished.extend(seq.sequence for seq in result.finished)
        engine = self.engine
        self.samples.append(
            Sample(
                self.now,
                duration,
                engine.num_running,
                engine.num_waiting,
                engine.usage(),
                engine.num_preemptions,
                plan.num_tokens,
                plan.decode,
            )
        )
        return plan

    def until_idle(self, max_steps: int = 1_000_000) -> None:
        for _ in range(max_steps):
            if not self.engine.has_work() and not self.pending:
                return
            self.step()
        raise RuntimeError("the virtual run did not finish")

    def _admit(self) -> None:
        loras, costs = self.loras, self.engine.costs
        while self._arrivals and self._arrivals[0][0] <= self.now:
            entry, order, sequence, loaded = heapq.heappop(self._arrivals)
            delay = 0.0 if loaded else self._frontend.load_delay(self.engine.num_running, costs)
            if delay > 0.0:  # behind the front end's work for the running streams
                heapq.heappush(self._arrivals, (entry + delay, order, sequence, True))
            elif loras is None or sequence.adapter is None:
                self.engine.add(sequence)
            elif sequence in self._slotted:  # its adapter is loaded now
                self._slotted.discard(sequence)
                self.engine.add(sequence)
            else:
                self._for_slot.append(sequence)
        if self._for_slot:
            self._take_slots()

    def _take_slots(self) -> None:
        """Give slots to the waiting sequences whose adapter can have one, in order."""
        loras, now = self.loras, self.now
        assert loras is not None
        waiting: deque[Sequence] = deque()
        while self._for_slot:
            sequence = self._for_slot.popleft()
            adapter = sequence.adapter
            assert adapter is not None
            if not loras.can_acquire(adapter):
                waiting.append(sequence)
                continue
            ready = loras.acquire(adapter, now)
            if ready <= now:
                self.engine.add(sequence)
            else:  # back when its adapter is loaded
                self._slotted.add(sequence)
                heapq.heappush(self._arrivals, (ready, next(self._order), sequence, True))
        self._for_slot = waiting

    def _release(self, finished: list[StepSequence]) -> None:
        """Finished sequences give their adapter's slot back; waiting ones may take it."""
        loras = self.loras
        assert loras is not None
        for seq in finished:
            if seq.sequence.adapter is not None:
                loras.release(seq.sequence.adapter)
        if self._for_slot:
            self._take_slots()
