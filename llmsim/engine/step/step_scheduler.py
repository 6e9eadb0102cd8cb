"""One engine step: which sequences compute how many tokens, and what that produces.

A reduced vLLM v1 ``Scheduler.schedule()`` over explicit state: a token budget
(``max_num_batched_tokens``), the running list and the waiting queue.

1. Running sequences first, in order: each gets its next decode token or its next prefill
   chunk, as far as the budget goes. When one needs a block and none is free, the most
   recently admitted running sequence is preempted (recompute: its blocks are freed, it
   goes back to the front of the queue and later prefills prompt plus generated tokens).
2. If nothing was preempted, waiting sequences in arrival order (only those that arrived by
   the step's start: a sequence never joins a step that began before it): the cached prefix of a new
   prompt is taken from the prefix cache and the rest prefilled in chunks that fit the
   remaining budget; the first one whose blocks cannot be allocated stops the queue.
   A P/D decode-side sequence (its prompt's KV cache comes from a prefill instance) only
   gets its prompt's blocks and waits, outside the batch, until the transfer is done; from
   the first step after that it runs like any other sequence, with its prompt computed.
   With a cache-aware admission window (vLLM's ``--cache-aware-admission-window``) and the
   KV cache at least as full as its threshold, the plain waiting sequences among the first
   ``window`` go in order of their cached prefix first, deepest first
   (:meth:`StepScheduler._reorder_by_cached_prefix`).

A sequence with a timing override (a response rule's or a recording's ``time_to_first_token``
/ ``inter_token_latency``) computes no token before the override's schedule allows: its first
token is due ``time_to_first_token`` after arrival, token ``k`` ``k x inter_token_latency``
after the first. Until then it keeps its batch slot and its blocks (its prompt is prefilled
up to the last token) but its token-producing chunk waits, so the step model's own timing
acts as a floor and the override as the earliest release.

:meth:`StepScheduler.complete` then applies the step: every sequence whose computed tokens
reach its known tokens emits its next token, and finished sequences free their blocks.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from llmsim.engine.priority import enqueue, last_in_order
from llmsim.engine.step.cadence import PrefillCadence
from llmsim.engine.step.decode_runs import advance_reporting, run_quietly
from llmsim.engine.step.kv_cache import KVCacheManager, StepSequence
from llmsim.engine.step.lazy_decode import LazyDecoders
from llmsim.engine.step.plan import Chunk, Chunking, StepPlan, StepResult
from llmsim.engine.step.token_times import counts_left, due_at, gate, step_tokens


class StepScheduler:
    def __init__(
        self,
        kv: KVCacheManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        by_priority: bool = False,
        chunking: Chunking | None = None,
    ) -> None:
        self.kv = kv
        self.chunking = chunking or Chunking()
        self._cap = 0
        """This step's most prompt tokens per sequence (:meth:`Chunking.cap`; 0: no cap)."""
        self.by_priority = by_priority
        """``--scheduling-policy priority`` (:mod:`llmsim.engine.priority`)."""
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.watermark_blocks = 0
        """Blocks left free when a sequence joins others (vLLM's ``--watermark``)."""
        self.reserve_full = True
        """Admit a sequence only if all of it fits (vLLM's ``--scheduler-reserve-full-isl``)."""
        self.cadence = PrefillCadence()
        """``--prefill-schedule-interval`` (:mod:`llmsim.engine.step.cadence`)."""
        self.cache_aware_window = 0
        """vLLM's ``--cache-aware-admission-window``: 0 admits in arrival order (the engine
        sets it only with prefix caching and first-come-first-served)."""
        self.cache_aware_threshold = 0.5
        """KV cache usage below which the window is not applied (there is room for all)."""
        self._hold = False
        """This step computes no prompt tokens (the cadence holds them)."""
        self.running: list[StepSequence] = []
        self.waiting: deque[StepSequence] = deque()
        self.receiving: list[StepSequence] = []
        """P/D decode side: sequences holding their prompt's blocks, waiting for the KV."""
        self.num_preemptions = 0
        self._repeat: tuple[StepPlan, int] | None = None
        self.lazy: LazyDecoders | None = None
        """Set by a virtual run: decoding sequences advanced without a visit each step."""
        """After a quiet decode run: its plan and the fewest tokens any sequence has left.
        Until the running set changes (a step is planned, a sequence leaves) the next run
        needs no check of every sequence."""

    # -- views ------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        """Queued sequences and those receiving their KV cache (vLLM keeps both waiting)."""
        return len(self.waiting) + len(self.receiving)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self.receiving)

    def next_ready(self) -> float | None:
        """When the earliest KV transfer in flight finishes or a held-back token is due."""
        times = [seq.received_at for seq in self.receiving if seq.received_at is not None]
        for seq in self.running:
            if seq.sequence.timing is not None:
                due = due_at(seq)
                if due is not None:
                    times.append(due)
        return min(times) if times else None

    # -- membership -------------------------------------------------------------
    def add(self, seq: StepSequence) -> None:
        if self.by_priority:
            enqueue(self.waiting, seq, _queue_key)
        else:
            self.waiting.append(seq)

    def remove(self, seq: StepSequence) -> None:
        """Drop a sequence wherever it is (finish, abort) and free its blocks. Idempotent."""
        if seq.removed:
            return
        seq.removed = True
        self._repeat = None
        if self.lazy is not None and seq in self.lazy.members:
            self.lazy.settle()
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.receiving:
            self.receiving.remove(seq)
        else:
            self.running.remove(seq)
        self.kv.free(seq)

    def paused(self, duration: float) -> None:
        """The engine stood still this long (sleep's ``keep``): every sequence's timing
        override shifts by it, as the pacer shifts its deadlines."""
        self.settle()
        for seq in (*self.running, *self.waiting, *self.receiving):
            seq.paused_for += duration

    def preempt_running(self) -> int:
        """Preempt every running sequence, keeping their order at the front of the queue
        (vLLM's ``reset_prefix_cache(reset_running_requests=True)``); call between steps."""
        self._repeat = None
        self.settle()
        plan = StepPlan()
        for seq in reversed(self.running):
            self._preempt(seq, plan)
        self.running.clear()
        return len(plan.preempted)

    # -- the step ---------------------------------------------------------------
    def schedule(self, now: float, entered_by: float | None = None) -> StepPlan:
        """Build the next batch; ``now`` is when the step starts (first-scheduled times).

        A waiting sequence that reached the engine after ``entered_by`` (default ``now``)
        waits for a later step.
        """
        self._repeat = None
        plan = StepPlan()
        self._receive(now)
        lazy, budget = self.lazy, self.max_num_batched_tokens
        self._cap = self.chunking.cap(budget, len(self.running) + self.num_waiting)
        hold = self._hold = self.cadence.interval > 1 and self.cadence.holds(self.running)
        if lazy is not None and lazy.members:
            budget = self._schedule_lazy(lazy, plan, budget, now)
        else:
            budget = self._schedule_running(plan, budget, now, self.running)
        if not plan.preempted:
            entered_by = now if entered_by is None else entered_by
            if self.cache_aware_window and not hold:
                self._reorder_by_cached_prefix(now, entered_by)
            self._schedule_waiting(plan, budget, now, entered_by)
        if self.cadence.interval > 1:
            self.cadence.planned(plan, hold, len(self.waiting))
        return plan

    def settle(self) -> None:
        """Bring every lazy sequence up to date (before anything reads or reorders them)."""
        if self.lazy is not None and self.lazy.members:
            self.lazy.settle()

    def _schedule_lazy(self, lazy: LazyDecoders, plan: StepPlan, budget: int, now: float) -> int:
        """Plan the running sequences with the lazy ones counted, not visited; when the
        batch's order could matter, settle them all and plan as usual."""
        members = lazy.members
        if lazy.quiet(len(self.running), budget) and not self.waiting:
            count = plan.lazy = plan.decode = len(members)  # only lazy sequences, none due
            plan.context_tokens = lazy.context_tokens(lazy.steps + 1)
            return budget - count
        lazy.due()
        running = self.running
        if not members:
            active = running
        elif len(members) == len(running):  # members are running: every one is lazy
            active = []
        else:
            active = [seq for seq in running if seq not in members]
        if not lazy.fits(active, budget):
            lazy.settle()
            return self._schedule_running(plan, budget, now, self.running)
        lazy.open_blocks()
        count = plan.lazy = len(members)
        plan.decode += count
        plan.context_tokens += lazy.context_tokens(lazy.steps + 1)
        return self._schedule_running(plan, budget - count, now, active)

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
        lazy = self.lazy
        if lazy is not None:
            if plan.lazy:
                result.lazy, result.lazy_previous = plan.lazy, lazy.last_end
            lazy.step_done(now, result.emitted, len(result.finished))
        return result

    # -- runs of zero-length decode steps (zero latency) ---------------------------
    def decode_repeats(self, plan: StepPlan, limit: int) -> int:
        """How many more decode steps may be applied at once after ``plan`` (just completed):
        every running sequence decodes one token per step with no timing override, nothing
        waits or receives its KV cache and the free blocks cover them all. A sequence that
        runs out of tokens leaves at its last step, as step by step; 0 when the next step
        may differ (something to schedule, a prefill chunk, an override)."""
        self.settle()
        running = self.running
        if plan.preempted or self.waiting or self.receiving or limit <= 0 or not running:
            return 0
        if len(running) > self.max_num_batched_tokens:
            return 0
        repeat = self._repeat
        if repeat is not None and repeat[0] is plan:  # the same batch as the last run
            steps = min(limit, repeat[1])
            # each sequence opens at most steps // size + 1 blocks
            if (
                steps > 0
                and len(running) * (steps // self.kv.block_size + 1) <= self.kv.pool.num_free
            ):
                return steps
        most = 0
        for seq in running:
            sequence = seq.sequence
            generated = sequence.generated
            if generated == 0 or seq.num_computed + 1 != sequence.prompt_tokens + generated:
                return 0
            if sequence.timing is not None:
                return 0  # an override may hold its next token back
            most = max(most, len(sequence.output) - generated)
        steps = min(limit, most)
        if steps <= 0:
            return 0
        size = self.kv.block_size
        needed = 0
        for seq in running:
            sequence = seq.sequence
            tokens = min(steps, len(sequence.output) - sequence.generated)
            needed += -(-(seq.num_computed + tokens) // size) - len(seq.blocks)
        return steps if needed <= self.kv.pool.num_free else 0

    def run_decode_steps(
        self, plan: StepPlan, steps: int, now: float, step_finished: Callable[[], None] | None
    ) -> StepResult:
        """Apply ``steps`` decode steps that :meth:`decode_repeats` allowed, all ending at
        ``now``: each sequence produces one token per step until it has none left. The block
        pool sees the same calls in the same order as step by step when a listener hears
        them; finished sequences leave in the order they finished.

        Only steps where a sequence starts or fills a block touch that sequence; the others
        cost one ``step_finished`` call each (none when nobody listens).
        """
        running = list(self.running)
        self.cadence.executed += steps
        if step_finished is None and self.kv.block_size > 1:
            result = run_quietly(self.kv, running, steps, now)
            counts = result.counts
            assert counts is not None
        else:
            counts = [min(steps, left) for left in counts_left(running)]
            base = [seq.num_computed for seq in running]
            advance_reporting(self.kv, running, base, counts, steps, step_finished)
            result = StepResult(emitted=running, counts=counts)
            for index, seq in enumerate(running):
                count = counts[index]
                seq.num_computed = base[index] + count
                sequence = seq.sequence
                sequence.generated += count
                seq.previous_token_at = now if count > 1 else sequence.last_token_at
                sequence.last_token_at = now
                if sequence.generated >= len(sequence.output):
                    result.finished.append(seq)
        if result.finished:
            if len(result.finished) > 1:  # in the order they finished, then batch order
                order = {id(seq): index for index, seq in enumerate(running)}
                result.finished.sort(key=lambda seq: (counts[order[id(seq)]], order[id(seq)]))
            for seq in result.finished:
                self.remove(seq)
            result.segments = step_tokens(counts)
        else:
            self._repeat = (plan, max(counts_left(running)))
            result.segments = [(len(running), steps)]
        return result

    # -- internals --------------------------------------------------------------
    def _schedule_running(
        self, plan: StepPlan, budget: int, now: float, running: list[StepSequence]
    ) -> int:
        """Chunks for ``running`` (all running sequences, or those not lazy when the budget
        and the free blocks cover everyone, so that no one is preempted)."""
        index, cap, hold = 0, self._cap, self._hold
        while index < len(running) and budget > 0:
            seq = running[index]
            num_new = seq.num_tokens - seq.num_computed
            if hold and num_new > 1:  # a prompt's chunk waits for the cadence
                index += 1
                continue
            if 0 < cap < num_new:
                num_new = cap  # a long prompt's next chunk leaves room for the others
            num_new = min(num_new, budget)
            if seq.sequence.timing is not None:
                num_new = gate(seq, num_new, now, seq.num_computed)
            if num_new <= 0:
                index += 1
                continue
            while not self.kv.allocate(seq, num_new):
                if self.by_priority:
                    at = last_in_order(running, _queue_key)
                    victim = running.pop(at)
                    index -= at < index
                else:
                    victim = running.pop()
                self._preempt(victim, plan)
                if victim is seq:
                    break
            else:
                self._add_chunk(plan, seq, num_new)
                budget -= num_new
                index += 1
        return budget

    def _receive(self, now: float) -> None:
        """Sequences whose KV transfer finished by ``now`` join the running ones."""
        if not self.receiving:
            return
        arrived = [s for s in self.receiving if s.received_at is not None and s.received_at <= now]
        for seq in arrived:
            self.receiving.remove(seq)
            self.kv.receive(seq)
            self.running.append(seq)

    def _start_transfer(self, seq: StepSequence, plan: StepPlan, now: float) -> bool:
        """Give a decode-side sequence its prompt's blocks and start its KV transfer."""
        cached = self.kv.allocate_remote(seq)
        if cached < 0:
            return False
        self.waiting.popleft()
        seq.scheduled = True
        sequence = seq.sequence
        sequence.scheduled_at = now
        sequence.cached_tokens = cached
        if self.kv.enable_caching:
            plan.prefix_queries += seq.num_tokens
            plan.prefix_hits += cached
        delay = sequence.kv_transfer_delay or 0.0
        if cached:  # only the part not cached here travels
            delay *= (seq.num_tokens - cached) / seq.num_tokens
        seq.received_at = now + delay
        self.receiving.append(seq)
        return True

    def _reorder_by_cached_prefix(self, now: float, entered_by: float) -> None:
        """vLLM's cache-aware admission: within the window, waiting sequences whose prefix
        is cached go ahead of those that would compute theirs, so a cold prompt does not
        evict blocks a resident one still needs. Only plain waiting sequences (arrived, not
        preempted, not receiving their KV) trade places, among the slots they hold, so no
        other sequence moves and nothing passes it; the deepest cached prefix goes first,
        arrival order breaking ties."""
        waiting = self.waiting
        if len(waiting) < 2 or self.kv.pool.usage() < self.cache_aware_threshold:
            return
        head = list(itertools.islice(waiting, self.cache_aware_window))
        slots = [
            index
            for index, seq in enumerate(head)
            if not seq.scheduled
            and not seq.remote
            and seq.sequence.arrival <= now
            and seq.entered <= entered_by
        ]
        if len(slots) < 2:
            return
        cached = {index: len(self.kv.lookup(head[index])) for index in slots}
        order = sorted(slots, key=lambda index: (-cached[index], index))
        if order == slots:
            return
        reordered = list(head)
        for slot, source in zip(slots, order, strict=True):
            reordered[slot] = head[source]
        for _ in head:
            waiting.popleft()
        waiting.extendleft(reversed(reordered))

    def _schedule_waiting(self, plan: StepPlan, budget: int, now: float, entered_by: float) -> None:
        waiting, running, kv, cap = self.waiting, self.running, self.kv, self._cap
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            seq = waiting[0]
            if seq.sequence.arrival > now or seq.entered > entered_by:
                break  # it joins no step that started (or was due) before it existed
            if seq.remote and not seq.scheduled:
                if not self._start_transfer(seq, plan, now):
                    break
                continue
            if self._hold:
                break  # prompts wait for the cadence
            hits = kv.lookup(seq) if seq.num_computed == 0 else []
            cached = len(hits) * kv.block_size
            num_new = seq.num_tokens - seq.num_computed - cached
            if 0 < cap < num_new:
                num_new = cap
            if num_new > budget and not self.chunking.enabled:
                break  # unchunked, a prompt waits for a step that can take it whole
            num_new = min(num_new, budget)
            if seq.sequence.timing is not None:
                num_new = max(gate(seq, num_new, now, seq.num_computed + cached), 0)
            reserve = self.watermark_blocks if running else 0
            if self.reserve_full and not kv.fits(seq, hits, reserve):
                break  # the whole prompt must fit, not only its first chunk
            if not kv.allocate(seq, num_new, hits, reserve):
                break
            waiting.popleft()
            running.append(seq)
            if not seq.scheduled:
                seq.scheduled = True
                seq.sequence.scheduled_at = now
                seq.sequence.cached_tokens = cached
                if seq.sequence.num_preemptions == 0:
                    plan.prefix_queries += seq.num_tokens if kv.enable_caching else 0
                    plan.prefix_hits += cached
            if num_new > 0:  # zero: admitted, holding its blocks, its first token not due
                self._add_chunk(plan, seq, num_new)
            budget -= num_new

    def _add_chunk(self, plan: StepPlan, seq: StepSequence, num_new: int) -> None:
        decode = (
            num_new == 1
            and (seq.sequence.generated > 0 or seq.remote)
            and seq.num_computed + 1 == seq.num_tokens
        )
        plan.chunks.append(Chunk(seq, num_new, decode))
        if decode:
            plan.decode += 1
            plan.context_tokens += seq.num_tokens
        else:
            plan.prefill_tokens += num_new

    def _preempt(self, seq: StepSequence, plan: StepPlan) -> None:
        self.kv.free(seq)
        seq.sequence.num_preemptions += 1
        self.num_preemptions += 1
        if self.by_priority:
            enqueue(self.waiting, seq, _queue_key)
        else:
            self.waiting.appendleft(seq)
        plan.preempted.append(seq)


def _queue_key(seq: StepSequence) -> tuple[int, float]:
    return seq.sequence.queue_key()
