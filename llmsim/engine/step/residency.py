"""How long sampled KV blocks live, sit idle before eviction, and wait between reuses.

vLLM's ``--kv-cache-metrics``: a share of the blocks the pool hands out is followed from
allocation until the block is handed out again (its content evicted); a prefix-cache hit
on it is an access. Each eviction of a followed block reports its lifetime (allocation to
eviction), its idle time (last access, or allocation, to eviction) and the gaps between its
last few accesses. Sampling keeps the cost of an unsampled block to one dictionary lookup
when it is handed out again.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmsim.engine.step.block_pool import KVBlock

HISTORY = 4
"""Accesses remembered per block, as vLLM's bounded access history."""

EvictionListener = Callable[[float, float, list[float]], None]
"""``(lifetime, idle, reuse gaps)`` of one evicted block, in seconds."""


@dataclass(slots=True)
class _Followed:
    born: float
    last: float
    accesses: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))


class BlockResidency:
    def __init__(
        self,
        sample: float,
        listener: EvictionListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.sample = sample
        self.listener = listener
        self._clock = clock
        self._random = (rng or random.Random()).random
        self._followed: dict[int, _Followed] = {}

    @property
    def num_followed(self) -> int:
        return len(self._followed)

    def allocated(self, blocks: Iterable[KVBlock]) -> None:
        """Blocks handed out: whatever they held is evicted; some are followed from now."""
        followed, now = self._followed, self._clock()
        for block in blocks:
            state = followed.pop(block.block_id, None)
            if state is not None:
                self._evicted(state, now)
            if self._random() < self.sample:
                followed[block.block_id] = _Followed(now, now)

    def accessed(self, block: KVBlock) -> None:
        """A prefix-cache hit took the block back into use."""
        state = self._followed.get(block.block_id)
        if state is not None:
            now = self._clock()
            state.last = now
            state.accesses.append(now)

    def reset(self) -> None:
        """The cache was dropped (sleep, reset): follow nothing, report nothing."""
        self._followed.clear()

    def _evicted(self, state: _Followed, now: float) -> None:
        if self.listener is None:
            return
        gaps = [later - earlier for earlier, later in pairwise(state.accesses)]
        self.listener(now - state.born, now - state.last, gaps)
