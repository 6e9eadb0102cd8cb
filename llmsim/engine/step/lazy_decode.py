"""Decoding sequences a virtual run need not visit every step.

A running sequence that decodes one token per step, with no timing override, does the same
thing step after step: one more token computed and emitted, a block opened every
``block_size`` tokens and, with prefix caching, one named as it fills. In virtual time
nobody reads its counters between those moments, so the scheduler keeps such sequences
*lazy*: a step counts them (``d`` and their context tokens, in O(1)) without touching
them, and a sequence is brought up to date (:meth:`LazyDecoders.settle`) only at the step
where it opens or fills a block or produces its last token, where it is scheduled like any
other running sequence by the scheduler's own code; a block it only fills or opens is named
or taken in place. Everything the step does therefore happens as step by step: the same
blocks leave the free queue, the same names are given, at the same times. Only which of the
blocks taken in one step a sequence gets may differ (block ids are labels: no result
depends on them, since every block freed later goes back in the order it is freed).

When a step could differ (the token budget or the free blocks do not cover every running
sequence, so the order of the batch decides who is cut or preempted) every lazy sequence
is brought up to date first and the step is planned as usual. The live server never uses
this: it writes each sequence's tokens at every step.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from llmsim.engine.step.kv_cache import KVCacheManager, StepSequence


@dataclass(slots=True)
class _Joined:
    """A lazy sequence's state when it became lazy, after step ``step``."""

    step: int
    computed: int
    generated: int
    last_at: float | None
    previous_at: float | None


@dataclass(slots=True)
class LazyDecoders:
    """The lazy sequences of one scheduler and the steps where each needs a visit."""

    kv: KVCacheManager
    members: dict[StepSequence, _Joined] = field(default_factory=dict)
    steps: int = 0
    """Steps completed so far (every step since a member joined included it)."""
    last_end: float = 0.0
    """When the last completed step ended."""
    previous_end: float = 0.0
    """When the step before it ended."""
    skipped: int = 0
    """Visits saved so far: steps a lazy sequence took without being scheduled itself."""
    _visits: list[tuple[int, int, StepSequence]] = field(default_factory=list)
    """(step, order, sequence): the step at which a member must be scheduled itself."""
    _base: int = 0
    """Sum over members of ``computed - step``: their context tokens at step ``s`` are
    ``_base + len(members) * s``."""
    _order: Iterator[int] = field(default_factory=itertools.count)
    _next: list[StepSequence] = field(default_factory=list)
    """Members due a visit at the step after the coming one (a block filled now opens then):
    a list, not the heap, for the most common visit."""
    _opening: list[StepSequence] = field(default_factory=list)
    """Members that open a block in the coming step (taken once the step is known to fit)."""

    @property
    def count(self) -> int:
        return len(self.members)

    def context_tokens(self, step: int) -> int:
        """The tokens the members hold when step ``step`` (1-based) is planned."""
        return self._base + len(self.members) * step

    def quiet(self, running: int, budget: int) -> bool:
        """Whether the next step runs the members alone (all ``running`` sequences) and
        none is due a visit: then it only counts them."""
        visits = self._visits
        return (
            len(self.members) == running
            and running <= budget
            and not self._next
            and (not visits or visits[0][0] > self.steps + 1)
        )

    def due(self) -> None:
        """Bring up to date, and drop from the members, those the next step must visit."""
        visits, upcoming, soon = self._visits, self.steps + 1, self._next
        if not soon and (not visits or visits[0][0] > upcoming):
            return
        visiting = soon[:]
        soon.clear()
        while visits and visits[0][0] <= upcoming:
            visiting.append(heapq.heappop(visits)[2])
        members, opening, size = self.members, self._opening, self.kv.block_size
        for seq in visiting:
            joined = members[seq]
            since = upcoming - joined.step
            computed = joined.computed + since - 1
            if joined.generated + since >= len(seq.sequence.output):
                self._leave(seq)  # its last token: the step finishes it
            elif computed % size == 0 and computed == len(seq.blocks) * size:
                opening.append(seq)
            elif self._fill(seq, computed):
                soon.append(seq)
            else:
                self._leave(seq)

    def open_blocks(self) -> None:
        """Give each member opening a block in this step its block: the step fits, so no
        one is refused one, and the same blocks leave the free queue in any order."""
        opening = self._opening
        if not opening:
            return
        size, upcoming = self.kv.block_size, self.steps + 1
        naming = self.kv.enable_caching
        # one allocation for all: the blocks leave the free queue as one at a time would
        taken = self.kv.pool.allocate(len(opening))
        for seq, block in zip(opening, taken, strict=True):
            seq.blocks.append(block)
            joined = self.members[seq]
            # the next visit: the block fills (size - 1 steps on), or the last token
            after = size - 1 if naming and seq.prompt_ids is not None else size
            last = joined.step + len(seq.sequence.output) - joined.generated
            visit = min(upcoming + after, last)
            heapq.heappush(self._visits, (visit, next(self._order), seq))
        opening.clear()

    def _fill(self, seq: StepSequence, computed: int) -> bool:
        """Name the block ``seq`` fills with token ``computed`` without a visit, when that
        only extends the run of names it defers (:meth:`DeferredNames.defer`'s usual case,
        which no other sequence's work in the step can change); False when it needs one."""
        kv = self.kv
        size = kv.block_size
        run = seq.deferred
        if (
            (computed + 1) % size
            or run is None
            or run.end != seq.num_cached_blocks
            or kv.pool.reports
        ):
            return False
        full = (computed + 1) // size
        kv.pool.num_deferred += full - run.end
        run.end = seq.num_cached_blocks = full
        return True

    def fits(self, active: list[StepSequence], budget: int) -> bool:
        """Whether every running sequence gets all it asks for in the next step: then the
        order of the batch decides nothing but which free block each one takes."""
        demand, blocks = len(self.members), len(self._opening)
        size = self.kv.block_size
        for seq in active:
            wanted = seq.num_tokens - seq.num_computed
            demand += wanted
            blocks += max(-(-(seq.num_computed + wanted) // size) - len(seq.blocks), 0)
        return demand <= budget and blocks <= self.kv.pool.num_free

    def settle(self) -> None:
        """Bring every member up to date and stop keeping any lazy."""
        for seq in list(self.members):
            self._leave(seq)
        self._visits.clear()
        self._next.clear()
        self._opening.clear()

    def step_done(self, now: float, emitted: list[StepSequence], finished: int) -> None:
        """A step ended at ``now``; its emitting sequences that may go lazy join."""
        self.steps += 1
        self.previous_end, self.last_end = self.last_end, now
        if len(emitted) <= finished:
            return
        size = self.kv.block_size
        naming = self.kv.enable_caching
        for seq in emitted:
            sequence = seq.sequence
            generated, computed = sequence.generated, seq.num_computed
            left = len(sequence.output) - generated
            if (
                left < 2
                or seq.removed
                or sequence.timing is not None
                or computed != sequence.prompt_tokens + generated - 1
                or len(seq.blocks) != -(-computed // size)
            ):
                continue
            fills = naming and seq.prompt_ids is not None
            if fills and seq.num_cached_blocks != computed // size:
                continue
            # the k-th next step computes token ``computed + k - 1``: it opens a block at a
            # multiple of the size, fills one just before, and the last step comes at ``left``
            rest = computed % size
            visit = 1 + ((-rest) % size)
            if fills:
                visit = min(visit, 1 + ((size - 1 - rest) % size))
            visit = min(visit, left)
            if visit < 2:
                continue
            self.members[seq] = _Joined(
                self.steps, computed, generated, sequence.last_token_at, seq.previous_token_at
            )
            self._base += computed - self.steps
            heapq.heappush(self._visits, (self.steps + visit, next(self._order), seq))

    def _leave(self, seq: StepSequence) -> None:
        """Write the steps ``seq`` took while lazy into its counters and times."""
        joined = self.members.pop(seq)
        self._base -= joined.computed - joined.step
        taken = self.steps - joined.step
        if taken <= 0:
            return
        self.skipped += taken
        seq.num_computed = joined.computed + taken
        sequence = seq.sequence
        sequence.generated = joined.generated + taken
        sequence.last_token_at = self.last_end
        seq.previous_token_at = self.previous_end if taken > 1 else joined.last_at
