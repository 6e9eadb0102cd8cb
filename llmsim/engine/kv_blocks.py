"""A block-level KV cache for the constant and per-token latency models (``kv_blocks``).

It reuses the step engine's :class:`~llmsim.engine.step.block_pool.BlockPool` and
:class:`~llmsim.engine.step.kv_cache.KVCacheManager`, but without steps: a sequence takes
the blocks of its whole prompt and output when it is admitted (its output is known then),
after the prefix cache's hits, and gives them back when it finishes or is aborted. When
they do not fit it waits, in arrival order; nothing is ever preempted. Opt-in, because
hashing every prompt's blocks is work the plain path does not do.
"""

from __future__ import annotations

from collections.abc import Callable

from llmsim.engine.block_hash import BlockHasher, sha256_pickle_hasher
from llmsim.engine.kv_listener import KVCacheListener, NullKVCacheListener
from llmsim.engine.sequence import Sequence
from llmsim.engine.step.block_pool import BlockPool
from llmsim.engine.step.kv_cache import KVCacheManager, StepSequence
from llmsim.engine.step.step_engine import num_kv_blocks


class KVBlocks:
    """Which blocks each running sequence holds, and the prefix-cache counts."""

    def __init__(
        self,
        *,
        kv_cache_size: int,
        block_size: int,
        enable_prefix_caching: bool,
        hasher: BlockHasher | None = None,
        listener: KVCacheListener | None = None,
    ) -> None:
        self.pool = BlockPool(
            num_kv_blocks(kv_cache_size, block_size),
            block_size,
            listener or NullKVCacheListener(),
        )
        self.kv = KVCacheManager(
            self.pool,
            enable_caching=enable_prefix_caching,
            hasher=hasher or sha256_pickle_hasher,
        )
        self._held: dict[Sequence, StepSequence] = {}
        self.looked_up: Callable[[int, int], None] | None = None
        """Told ``(prompt tokens queried, tokens hit)`` at every admission (the metrics)."""

    def attach(self, listener: KVCacheListener, hasher: BlockHasher) -> None:
        """Use this KV-event listener and block hasher from now on (wired before any request)."""
        self.pool.listener = listener
        self.kv.hasher = hasher

    def usage(self) -> float:
        return self.pool.usage()

    def admit(self, sequence: Sequence) -> bool:
        """Take the blocks of the sequence's prompt and output; False (nothing taken) if
        they do not fit. Sets ``sequence.cached_tokens`` to the prompt's prefix-cache hit."""
        seq = StepSequence(sequence, sequence.prompt_token_ids)
        kv, pool = self.kv, self.pool
        hits = kv.lookup(seq)
        reclaimed = sum(1 for block in hits if block.ref_cnt == 0)
        total = kv.blocks_for(sequence.prompt_tokens + len(sequence.output))
        if total - len(hits) > pool.num_free - reclaimed:
            return False
        cached = len(hits) * kv.block_size
        kv.allocate(seq, sequence.prompt_tokens - cached, hits)  # names the prompt's blocks
        pool.allocate_into(seq.blocks, total - len(seq.blocks))  # room for the output
        self._held[sequence] = seq
        sequence.cached_tokens = cached
        if self.looked_up is not None:
            self.looked_up(sequence.prompt_tokens, cached)
        if pool.reports:
            pool.listener.step_finished()
        return True

    def free(self, sequence: Sequence) -> None:
        """Give back the sequence's blocks (its named ones stay cached until evicted)."""
        seq = self._held.pop(sequence, None)
        if seq is None:
            return
        self.kv.free(seq)
        if self.pool.reports:
            self.pool.listener.step_finished()

    def clear_cache(self) -> int:
        """Forget every cached block; return how many there were."""
        count = self.kv.clear_cache()
        if self.pool.reports:
            self.pool.listener.step_finished()
        return count
