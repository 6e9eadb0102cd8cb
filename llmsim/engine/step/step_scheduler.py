"""One engine step: which sequences compute how many tokens, and what that produces.

A reduced vLLM v1 ``Scheduler.schedule()`` over explicit state: a token budget
(``max_num_batched_tokens``), the running list and the waiting queue.

1. Running sequences first, in order: each gets its next decode token or its next prefill
   chunk, as far as the budget goes. When one needs a block and none is free, the most
   recently admitted running sequence is preempted (recompute: its blocks are freed, it
   goes back to the front of the queue and later prefills prompt plus generated tokens).
2. If nothing was preempted, waiting sequences in arrival order: the cached prefix of a new
   prompt is taken from the prefix cache and the rest prefilled in chunks that fit the
   remaining budget; the first one whose blocks cannot be allocated stops the queue.

:meth:`StepScheduler.complete` then applies the step: every sequence whose computed tokens
reach its known tokens emits its next token, and finished sequences free their blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from llmsim.engine.step.kv_cache import KVCacheManager, StepSequence


@dataclass(slots=True)
class Chunk:
    seq: StepSequence
    tokens: int
    decode: bool


@dataclass(slots=True)
class StepPlan:
    """The batch of one step and the counts its duration depends on."""

    chunks: list[Chunk] = field(default_factory=list)
    preempted: list[StepSequence] = field(default_factory=list)
    decode: int = 0
    """``d``: sequences computing one decode token."""
    prefill_tokens: int = 0
    """``p``: prompt (or recomputed) tokens computed in this step."""
    context_tokens: int = 0
    """``c``: tokens held by the decoding sequences."""
    prefix_queries: int = 0
    prefix_hits: int = 0

    @property
    def num_tokens(self) -> int:
        return self.decode + self.prefill_tokens

    @property
    def empty(self) -> bool:
        return not self.chunks


@dataclass(slots=True)
class StepResult:
    emitted: list[StepSequence] = field(default_factory=list)
    """Sequences that produced one token at the end of the step."""
    finished: list[StepSequence] = field(default_factory=list)
    """Sequences that produced their last token (or had none to produce)."""


class StepScheduler:
    def __init__(
        self, kv: KVCacheManager, *, max_num_seqs: int, max_num_batched_tokens: int
    ) -> None:
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.running: list[StepSequence] = []
        self.waiting: deque[StepSequence] = deque()
        self.num_preemptions = 0

    # -- views ------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- membership -------------------------------------------------------------
    def add(self, seq: StepSequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: StepSequence) -> None:
        """Drop a sequence wherever it is (finish, abort) and free its blocks. Idempotent."""
        if seq.removed:
            return
        seq.removed = True
        if seq in self.waiting:
            self.waiting.remove(seq)
        else:
            self.running.remove(seq)
        self.kv.free(seq)

    # -- the step ---------------------------------------------------------------
    def schedule(self, now: float) -> StepPlan:
        """Build the next batch; ``now`` is when the step starts (first-scheduled times)."""
        plan = StepPlan()
        budget = self._schedule_running(plan, self.max_num_batched_tokens)
        if not plan.preempted:
            self._schedule_waiting(plan, budget, now)
        return plan

    def complete(self, plan: StepPlan, now: float) -> StepResult:
        """Apply the step that ran: computed tokens advance, tokens come out at ``now``."""
        result = StepResult()
        for chunk in plan.chunks:
            seq = chunk.seq
            if seq.removed:
                continue  # aborted while the step ran
            seq.num_computed += chunk.tokens
            if seq.num_computed < seq.num_tokens:
                continue  # a prefill chunk that was not the last
            sequence = seq.sequence
            if sequence.generated < len(sequence.output):
                if sequence.generated == 0:
                    sequence.first_token_at = now
                sequence.generated += 1
                seq.previous_token_at = sequence.last_token_at
                sequence.last_token_at = now
                result.emitted.append(seq)
            if sequence.generated >= len(sequence.output):
                result.finished.append(seq)
        for seq in result.finished:
            self.remove(seq)
        return result

    # -- runs of identical decode steps (zero latency) ----------------------------
    def decode_repeats(self, plan: StepPlan, limit: int) -> int:
        """How many more steps exactly like ``plan`` (just completed) would follow: every
        running sequence decodes one token, nothing waits, the free blocks cover them all and
        no sequence finishes before the last; 0 when the next step may differ."""
        running = self.running
        if plan.prefill_tokens or plan.preempted or self.waiting or limit <= 0:
            return 0
        if len(running) != plan.decode or len(running) > self.max_num_batched_tokens:
            return 0
        steps = limit
        for seq in running:
            sequence = seq.sequence
            if sequence.generated == 0 or seq.num_computed + 1 != seq.num_tokens:
                return 0
            steps = min(steps, len(sequence.output) - sequence.generated)
        if steps <= 0:
            return 0
        kv = self.kv
        needed = sum(kv.blocks_for(seq.num_computed + steps) - len(seq.blocks) for seq in running)
        return steps if needed <= kv.pool.num_free else 0

    def run_decode_steps(
        self, steps: int, now: float, step_finished: Callable[[], None]
    ) -> StepResult:
        """Apply ``steps`` decode steps that :meth:`decode_repeats` allowed, all ending at
        ``now``, with the block pool seeing the same calls in the same order as step by step.

        Only steps where a sequence starts or fills a block touch that sequence; the others
        cost one ``step_finished`` call each.
        """
        kv, size = self.kv, self.kv.block_size
        running = list(self.running)
        base = [seq.num_computed for seq in running]
        touches: dict[int, list[int]] = {}
        for index, start in enumerate(base):
            # step j computes token start + j - 1: it may start a block, or fill one to cache
            js = set(range((-start) % size + 1, steps + 1, size))
            if kv.enable_caching and running[index].prompt_ids is not None:
                js.update(range((-start - 1) % size + 1, steps + 1, size))
            for j in js:
                touches.setdefault(j, []).append(index)
        done = 0
        for j in sorted(touches):
            for _ in range(j - 1 - done):
                step_finished()
            for index in sorted(touches[j]):
                seq = running[index]
                seq.num_computed = base[index] + j - 1
                if not kv.allocate(seq, 1):  # pragma: no cover - decode_repeats checked room
                    raise RuntimeError("decode run out of blocks")
            step_finished()
            done = j
        for _ in range(steps - done):
            step_finished()
        result = StepResult(emitted=running)
        for index, seq in enumerate(running):
            seq.num_computed = base[index] + steps
            sequence = seq.sequence
            sequence.generated += steps
            seq.previous_token_at = now if steps > 1 else sequence.last_token_at
            sequence.last_token_at = now
            if sequence.generated >= len(sequence.output):
                result.finished.append(seq)
        for seq in result.finished:
            self.remove(seq)
        return result

    # -- internals --------------------------------------------------------------
    def _schedule_running(self, plan: StepPlan, budget: int) -> int:
        running = self.running
        index = 0
        while index < len(running) and budget > 0:
            seq = running[index]
            num_new = min(seq.num_tokens - seq.num_computed, budget)
            if num_new <= 0:
                index += 1
                continue
            while not self.kv.allocate(seq, num_new):
                victim = running.pop()
                self._preempt(victim, plan)
                if victim is seq:
                    break
            else:
                self._add_chunk(plan, seq, num_new)
                budget -= num_new
                index += 1
        return budget

    def _schedule_waiting(self, plan: StepPlan, budget: int, now: float) -> None:
        waiting, running, kv = self.waiting, self.running, self.kv
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            seq = waiting[0]
            hits = kv.lookup(seq) if seq.num_computed == 0 else []
            cached = len(hits) * kv.block_size
            num_new = min(seq.num_tokens - seq.num_computed - cached, budget)
            if not kv.allocate(seq, num_new, hits):
                break
            waiting.popleft()
            running.append(seq)
            if not seq.scheduled:
                seq.scheduled = True
                seq.sequence.scheduled_at = now
                seq.sequence.cached_tokens = cached
                if seq.num_preemptions == 0:
                    plan.prefix_queries += seq.num_tokens if kv.enable_caching else 0
                    plan.prefix_hits += cached
            self._add_chunk(plan, seq, num_new)
            budget -= num_new

    def _add_chunk(self, plan: StepPlan, seq: StepSequence, num_new: int) -> None:
        decode = (
            num_new == 1 and seq.sequence.generated > 0 and seq.num_computed + 1 == seq.num_tokens
        )
        plan.chunks.append(Chunk(seq, num_new, decode))
        if decode:
            plan.decode += 1
            plan.context_tokens += seq.num_tokens
        else:
            plan.prefill_tokens += num_new

    def _preempt(self, seq: StepSequence, plan: StepPlan) -> None:
        self.kv.free(seq)
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        plan.preempted.append(seq)
