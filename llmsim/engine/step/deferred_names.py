"""Naming decode-filled blocks only when a lookup could find them (no KV-event listener).

A block that decoding fills is named at once in vLLM, which costs a hash every
``block_size`` tokens of every stream. When no one subscribes to KV events, the only reader
of such a name is a later prefix-cache lookup whose chain of hashes reaches the block: a
conversation's next turn, or a preempted sequence coming back. So the blocks a sequence
fills while decoding are recorded as one :class:`DeferredRun` under the hash of the block
before them, and named when a lookup misses right after that hash. A lookup then finds
what it would have found had they been named at once; an evicted block drops its deferred
name as it would have dropped a computed one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING, Any

from llmsim.engine.block_hash import BlockHash, BlockHasher, output_token_id
from llmsim.engine.step.block_pool import BlockPool, KVBlock

if TYPE_CHECKING:
    from llmsim.engine.step.kv_cache import StepSequence


class DeferredRun:
    """Consecutive blocks of one sequence, filled by decoding and not named yet."""

    __slots__ = ("blocks", "extra", "first", "ids", "parent", "seq", "texts")

    def __init__(self, seq: StepSequence, parent: BlockHash | None, first: int) -> None:
        self.seq: StepSequence | None = seq
        """The sequence while it holds the blocks (their token ids are its own)."""
        self.parent = parent
        self.first = first
        """The chain index of ``blocks[0]`` in the sequence."""
        self.blocks: list[KVBlock] = []
        self.extra: tuple[Any, ...] | None = seq.extra_keys
        self.ids: list[int] = []
        self.texts: Seq[str] = ()
        """Once the sequence let the blocks go, their tokens: the ids known then, followed by
        the generated texts whose ids were not (nothing more, so a long prompt is not kept)."""

    @property
    def dead(self) -> bool:
        """No block carries this run's name any more (all evicted, or the run was named).

        Its blocks were freed tail first, so the first block is the last one evicted.
        """
        return not self.blocks or self.blocks[0].deferred is not self

    def token_ids(self, index: int, size: int) -> Seq[int]:
        if self.seq is not None:
            start = (self.first + index) * size
            return self.seq.token_ids(start, start + size)
        start, stop = index * size, (index + 1) * size
        ids, known = self.ids[start:stop], len(self.ids)
        if stop > known:
            ids.extend(map(output_token_id, self.texts[max(start - known, 0) : stop - known]))
        return ids

    def keep_tokens(self, seq: StepSequence, block_size: int) -> None:
        """Copy the run's own tokens out of ``seq``, which lets go of the blocks."""
        start = self.first * block_size
        stop = start + len(self.blocks) * block_size
        sequence = seq.sequence
        prompt = sequence.prompt_tokens
        assert seq.prompt_ids is not None
        ids = list(seq.prompt_ids[start : min(stop, prompt)]) if start < prompt else []
        begin, end = max(start, prompt) - prompt, stop - prompt
        known = seq.output_ids
        named = min(max(len(known), begin), end)
        ids.extend(known[begin:named])
        self.ids = ids
        self.texts = sequence.output[named:end]
        self.seq = None


class DeferredNames:
    def __init__(self, pool: BlockPool, hasher: BlockHasher) -> None:
        self.pool = pool
        self.hasher = hasher
        self._by_parent: dict[BlockHash | None, dict[DeferredRun, None]] = {}
        self._released: deque[DeferredRun] = deque()
        """Runs whose sequence let go of the blocks, in that order: the order they die in,
        since the free queue evicts blocks in the order they were freed."""

    def defer(self, seq: StepSequence, full: int) -> None:
        """Blocks ``seq.num_cached_blocks`` to ``full`` filled: their names wait for a lookup."""
        run = seq.deferred
        first = seq.num_cached_blocks
        if run is not None and run.first + len(run.blocks) != first:
            self.resolve_run(run)  # not contiguous (cannot happen today): settle it first
            run = None
        if run is None:
            hashes = seq.hashes
            if len(hashes) < first:  # a reset dropped the names before: compute the chain
                seq.extend_hashes(self.hasher, self.pool.block_size, first)
            run = DeferredRun(seq, hashes[first - 1] if first else None, first)
            self._by_parent.setdefault(run.parent, {})[run] = None
            seq.deferred = run
        blocks = seq.blocks
        for index in range(first, full):
            block = blocks[index]
            block.deferred = run
            run.blocks.append(block)
        self.pool.num_deferred += full - first
        seq.num_cached_blocks = full

    def release(self, seq: StepSequence) -> None:
        """``seq`` frees its blocks: its run keeps their token ids to name them later, until
        the free queue has evicted them all."""
        run = seq.deferred
        if run is None:
            return
        seq.deferred = None
        run.keep_tokens(seq, self.pool.block_size)
        released = self._released
        released.append(run)
        while released and released[0].dead:  # forget the runs the queue has evicted
            self.forget(released.popleft())

    def resolve(self, hashes: Seq[BlockHash], index: int) -> bool:
        """Name the deferred runs that may hold block ``index`` of the chain ``hashes``
        (whose earlier blocks are cached); False if there is none.

        A run holding that block with this chain behind it hangs off one of the chain's
        earlier hashes (or off no hash, if it starts the chain), and reaches ``index``.
        """
        by_parent = self._by_parent
        if not by_parent:
            return False
        found = False
        for parent_index in range(index - 1, -2, -1):
            runs = by_parent.get(hashes[parent_index] if parent_index >= 0 else None)
            if runs:
                reaching = [run for run in runs if parent_index + 1 + len(run.blocks) > index]
                for run in reaching:
                    self.resolve_run(run)
                found = found or bool(reaching)
        return found

    def resolve_all(self) -> None:
        """Name every deferred block now (tests, and a check that nothing was lost)."""
        for runs in list(self._by_parent.values()):
            for run in list(runs):
                self.resolve_run(run)

    def resolve_run(self, run: DeferredRun) -> None:
        runs = self._by_parent.get(run.parent)
        if runs is not None:
            runs.pop(run, None)
            if not runs:
                del self._by_parent[run.parent]
        self._name(run)

    def forget(self, run: DeferredRun) -> None:
        """Drop a run from the index (it is named, or nothing is left to name)."""
        runs = self._by_parent.get(run.parent)
        if runs is not None:
            runs.pop(run, None)
            if not runs:
                del self._by_parent[run.parent]

    def clear(self) -> None:
        """The prefix cache was reset: deferred names go with the computed ones."""
        for runs in self._by_parent.values():
            for run in runs:
                for block in run.blocks:
                    if block.deferred is run:
                        block.deferred = None
                if run.seq is not None:
                    run.seq.deferred = None
        self._by_parent.clear()
        self._released.clear()
        self.pool.num_deferred = 0

    def _name(self, run: DeferredRun) -> None:
        """Compute the run's chain and name the blocks that still carry its deferred name."""
        pool, hasher, size = self.pool, self.hasher, self.pool.block_size
        seq = run.seq
        parent = run.parent
        for index, block in enumerate(run.blocks):
            block_hash = hasher(parent, run.token_ids(index, size), run.extra)
            if seq is not None and len(seq.hashes) == run.first + index:
                seq.hashes.append(block_hash)
            if block.deferred is run:
                block.deferred = None
                pool.num_deferred -= 1
                pool.cache_one(block, block_hash)
            parent = block_hash
        if seq is not None and seq.deferred is run:
            seq.deferred = None
