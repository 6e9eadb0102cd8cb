"""Which blocks each sequence holds, prefix-cache lookups and slot allocation.

A reduced vLLM ``KVCacheManager``: a sequence holds ``ceil(tokens / block_size)`` blocks
for the tokens computed so far plus those scheduled in the current step. Full blocks are
named by a hash chained over the parent hash, the block's token ids and the LoRA adapter
(:mod:`llmsim.engine.block_hash`) and enter the prefix cache as soon as they are scheduled,
as in vLLM, so a sibling scheduled later in the same step already finds them. Without a
KV-event listener, blocks filled by decoding (and, in a virtual run, a prompt's blocks) get
their names only when a lookup could find them (:mod:`llmsim.engine.step.deferred_names`).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b
from typing import Any

from llmsim.engine.block_hash import BlockHash, BlockHasher, output_token_id
from llmsim.engine.sequence import Sequence
from llmsim.engine.step.block_pool import BlockPool, KVBlock
from llmsim.engine.step.deferred_names import DeferredNames, DeferredRun


@lru_cache(maxsize=1024)
def stable_lora_id(adapter: str) -> int:
    """A positive integer derived from an adapter name, for an engine without a LoRA registry."""
    return int.from_bytes(blake2b(adapter.encode(), digest_size=4).digest(), "big") or 1


@dataclass(eq=False, slots=True)
class StepSequence:
    """A sequence as the step engine sees it: computed tokens and blocks held."""

    sequence: Sequence
    prompt_ids: Seq[int] | None
    """The prompt's token ids; None when prefix caching is off (nothing is hashed)."""
    blocks: list[KVBlock] = field(default_factory=list)
    hashes: list[BlockHash] = field(default_factory=list)
    """Chain hashes of the sequence's full blocks known so far (kept across preemption)."""
    num_computed: int = 0
    num_cached_blocks: int = 0
    """How many of ``blocks`` were offered to the prefix cache."""
    scheduled: bool = False
    removed: bool = False
    """Finished or aborted: the sequence holds nothing and a step in flight skips it."""
    previous_token_at: float | None = None
    """When the token before the last one came out (the inter-token gap)."""
    output_ids: Seq[int] = field(default_factory=list)
    """Ids of the generated tokens named so far (each named once, when a block fills)."""
    received_at: float | None = None
    """P/D decode side: when the prompt's KV cache has arrived (None: computed locally)."""
    deferred: DeferredRun | None = None
    """The blocks this sequence filled while decoding whose names wait for a lookup."""
    paused_for: float = 0.0
    """Time the engine stood still under a ``keep`` pause; shifts a timing override."""
    entered: float = float("-inf")
    """When it reached the engine, by the live loop's clock (virtual runs add a sequence
    only at a step's start: they leave it at -inf)."""

    @property
    def remote(self) -> bool:
        """The prompt's KV cache comes from a prefill instance instead of a local prefill."""
        return self.sequence.kv_transfer_delay is not None

    @property
    def num_tokens(self) -> int:
        """Prompt plus every token streamed so far: what a (re)computation must cover."""
        return self.sequence.prompt_tokens + self.sequence.generated

    @property
    def extra_keys(self) -> tuple[Any, ...] | None:
        adapter = self.sequence.adapter
        return None if adapter is None else (adapter,)

    def token_ids(self, start: int, stop: int) -> Seq[int]:
        """Ids of tokens ``start:stop`` (prompt, then generated text)."""
        assert self.prompt_ids is not None
        prompt = self.sequence.prompt_tokens
        if start >= prompt:  # generated tokens only: a block that filled while decoding
            return self._output_ids(stop - prompt)[start - prompt : stop - prompt]
        if stop <= prompt:  # prompt tokens only: a slice, read and never changed
            return self.prompt_ids[start:stop]
        ids = list(self.prompt_ids[start:prompt])
        if stop > prompt:
            ids.extend(self._output_ids(stop - prompt)[: stop - prompt])
        return ids

    def extend_hashes(self, hasher: BlockHasher, block_size: int, count: int) -> None:
        """Know the chain hashes of the first ``count`` blocks (computing the missing ones)."""
        hashes, size = self.hashes, block_size
        extra = self.extra_keys
        ids = self.prompt_ids
        if ids is not None and len(hashes) < count:
            parent = hashes[-1] if hashes else None
            # blocks of the prompt alone: hashed from slices of its ids, with no copy
            for start in range(len(hashes) * size, min(count, len(ids) // size) * size, size):
                parent = hasher(parent, ids[start : start + size], extra)
                hashes.append(parent)
        while len(hashes) < count:
            start = len(hashes) * size
            parent = hashes[-1] if hashes else None
            hashes.append(hasher(parent, self.token_ids(start, start + size), extra))

    def _output_ids(self, need: int) -> Seq[int]:
        """The ids of generated tokens, named up to ``need`` at least (ids known from the
        start, a list or a range, cover every generated token)."""
        named = self.output_ids
        if len(named) < need:
            if not isinstance(named, list):
                named = self.output_ids = list(named)
            named.extend(map(output_token_id, self.sequence.output[len(named) : need]))
        return named


class KVCacheManager:
    def __init__(
        self,
        pool: BlockPool,
        *,
        enable_caching: bool,
        hasher: BlockHasher,
    ) -> None:
        self.pool = pool
        self.block_size = pool.block_size
        self.enable_caching = enable_caching
        self.names = DeferredNames(pool, hasher)
        self.hasher = hasher
        self.lora_ids: Callable[[str], int] = stable_lora_id
        """An adapter's integer id in KV events: the engine's LoRA registry sets vLLM's
        counter (1, 2, ... in load order); on its own the engine derives one from the name."""
        self.defer_prompts = False
        """Name a prompt's blocks only when a lookup could find them, as decode-filled ones
        (a virtual run's choice): a lookup hashes the prompt only up to its first miss."""

    @property
    def hasher(self) -> BlockHasher:
        return self._hasher

    @hasher.setter
    def hasher(self, hasher: BlockHasher) -> None:
        self._hasher = hasher
        self.names.hasher = hasher

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def lookup(self, seq: StepSequence) -> list[KVBlock]:
        """The longest run of cached blocks at the start of the sequence's tokens.

        At most ``num_tokens - 1`` tokens can hit, so at least one token is computed and
        the step produces the next token (vLLM's rule).
        """
        if not self.enable_caching or seq.prompt_ids is None:
            return []
        limit = (seq.num_tokens - 1) // self.block_size
        lazy = self.defer_prompts
        self._extend_hashes(seq, min(limit, 1) if lazy else limit)
        hits: list[KVBlock] = []
        hashes, pool = seq.hashes, self.pool
        for index in range(limit):
            if lazy and index == len(hashes):  # hashed up to the first miss only
                self._extend_hashes(seq, index + 1)
            block = pool.cached_block(hashes[index])
            if block is None:
                if not self.names.resolve_range(hashes, index, index + 1):  # none could be it
                    break
                block = pool.cached_block(hashes[index])
                if block is None:
                    break
            hits.append(block)
        return hits

    def allocate(
        self, seq: StepSequence, num_new: int, hits: Seq[KVBlock] = (), reserve: int = 0
    ) -> bool:
        """Give ``seq`` room for ``num_new`` more tokens after its hits, leaving ``reserve``
        blocks free; False if no room."""
        pool, size = self.pool, self.block_size
        if not hits and seq.num_computed + num_new <= len(seq.blocks) * size:
            # the usual decode step: the token fits the last block the sequence holds
            full = (seq.num_computed + num_new) // size
            if full > seq.num_cached_blocks and self.enable_caching and seq.prompt_ids is not None:
                self.name_decoded(seq, full)
            return True
        if not hits and num_new == 1 and size > 1 and seq.num_computed == len(seq.blocks) * size:
            # the next decode step opens a new block, which one token cannot fill: take one
            if not pool.num_free:
                return False
            pool.allocate_into(seq.blocks, 1)
            return True
        total = seq.num_computed + len(hits) * size + num_new
        needed = self.blocks_for(total) - len(seq.blocks) - len(hits)
        if not self._take(seq, hits, needed, reserve):
            return False
        seq.num_computed += len(hits) * size
        if self.enable_caching and seq.prompt_ids is not None:
            full = (seq.num_computed + num_new) // self.block_size
            if self.defer_prompts and not pool.reports and seq.sequence.timing is None:
                if full > seq.num_cached_blocks:
                    self.names.defer(seq, full, prompt=True)
            else:
                self._cache_full_blocks(seq, full)
        return True

    def fits(self, seq: StepSequence, hits: Seq[KVBlock], reserve: int) -> bool:
        """Whether all of ``seq`` fits, its ``hits`` reused, with ``reserve`` blocks to spare
        (vLLM's admission check of the whole prompt, ``--scheduler-reserve-full-isl``)."""
        needed = self.blocks_for(seq.num_tokens) - len(seq.blocks) - len(hits)
        return needed + reserve <= self._free_besides(hits)

    def allocate_remote(self, seq: StepSequence) -> int:
        """Blocks for a prompt whose KV cache a prefill instance sends; -1 if no room, else
        how many of its tokens the prefix cache already holds.

        The cached prefix is taken from here, as vLLM's scheduler does before it asks the
        connector for the rest; the other blocks only hold the prompt once the transfer
        finishes (:meth:`receive`), as on vLLM's decode side.
        """
        hits = self.lookup(seq) if not seq.blocks else []
        needed = self.blocks_for(seq.num_tokens) - len(seq.blocks) - len(hits)
        if not self._take(seq, hits, needed):
            return -1
        return len(hits) * self.block_size

    def receive(self, seq: StepSequence) -> None:
        """The transfer finished: all but the last token count as computed (vLLM's rule, so
        one step computes it and emits the first token) and the full blocks are cached."""
        seq.num_computed = max(seq.num_tokens - 1, 0)
        if self.enable_caching and seq.prompt_ids is not None:
            self._cache_full_blocks(seq, seq.num_computed // self.block_size)

    def free(self, seq: StepSequence) -> None:
        """Release the sequence's blocks, tail first, so its last blocks are evicted first."""
        if seq.deferred is not None:
            self.names.release(seq)
        self.pool.free(reversed(seq.blocks))
        seq.blocks = []
        seq.num_cached_blocks = 0
        seq.num_computed = 0

    def name_decoded(self, seq: StepSequence, full: int) -> None:
        """Decoding filled blocks up to ``full``: name them now if a listener hears of it,
        else when a lookup could find them.

        A sequence on a timing override (a rule's or a recording's pace) is named now too:
        it does not keep step with the others, so naming it later could put its copy of a
        block ahead of one another sequence filled first.
        """
        if self.pool.reports or seq.sequence.timing is not None:
            self._cache_full_blocks(seq, full)
        else:
            self.names.defer(seq, full)

    def clear_cache(self) -> int:
        """Forget every cached block, named or deferred; return how many there were."""
        count = self.pool.clear_cache()
        self.names.clear()
        return count

    # -- internals --------------------------------------------------------------
    def _take(self, seq: StepSequence, hits: Seq[KVBlock], needed: int, reserve: int = 0) -> bool:
        """Take the cached ``hits`` back into use and ``needed`` fresh blocks for ``seq``;
        False, with nothing taken, if they do not fit with ``reserve`` blocks to spare."""
        pool = self.pool
        if needed + reserve > self._free_besides(hits):
            return False
        if hits:
            pool.touch(hits)
            seq.blocks.extend(hits)
            seq.num_cached_blocks = len(seq.blocks)
        if needed > 0:
            pool.allocate_into(seq.blocks, needed)
        return True

    def _free_besides(self, hits: Seq[KVBlock]) -> int:
        """Free blocks once the cached ``hits`` nobody holds leave the free queue for reuse."""
        reclaimed = sum(1 for block in hits if block.ref_cnt == 0) if hits else 0
        return self.pool.num_free - reclaimed

    def _extend_hashes(self, seq: StepSequence, count: int) -> None:
        seq.extend_hashes(self.hasher, self.block_size, count)

    def _cache_full_blocks(self, seq: StepSequence, full: int) -> None:
        first = seq.num_cached_blocks
        if full <= first:
            return
        size, hashes = self.block_size, seq.hashes
        self._extend_hashes(seq, first)
        ids = seq.token_ids(first * size, full * size)
        if len(hashes) < full:  # name the new blocks from the ids already at hand
            extra, hasher = seq.extra_keys, self.hasher
            for k in range(len(hashes), full):
                offset = (k - first) * size
                parent = hashes[-1] if hashes else None
                hashes.append(hasher(parent, ids[offset : offset + size], extra))
        # a deferred copy of these blocks was filled before them: it is cached first
        self.names.resolve_range(hashes, first, full)
        parent = hashes[first - 1] if first else None
        adapter = seq.sequence.adapter
        self.pool.cache(
            seq.blocks[first:full],
            hashes[first:full],
            parent,
            ids,
            None if adapter is None else self.lora_ids(adapter),
            adapter,
        )
        seq.num_cached_blocks = full
