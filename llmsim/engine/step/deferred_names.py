"""Naming decode-filled blocks only when a lookup could find them (no KV-event listener).

A block that decoding fills is named at once in vLLM, which costs a hash every
``block_size`` tokens of every stream. When no one subscribes to KV events, the only reader
of such a name is a later prefix-cache lookup whose chain of hashes reaches the block: a
conversation's next turn, or a preempted sequence coming back. So the blocks a sequence
fills while decoding are recorded as one :class:`DeferredRun` under the hash of the block
before them, and named when a lookup misses right after that hash. A lookup then finds
what it would have found had they been named at once; an evicted block drops its deferred
name as it would have dropped a computed one.

A virtual run defers a prompt's blocks too (most prompts of a simulated workload are never
looked up again): their run is recorded under the hash of its own first block, the one a
lookup's chain must share to reach any of them, so a prompt costs one hash, not one a block.
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
    """Consecutive blocks of one sequence, filled by decoding and not named yet.

    While the sequence holds them they are ``seq.blocks[first:end]`` and carry no mark (held
    blocks cannot be evicted); when it lets go, :meth:`keep` marks them and keeps the tokens.
    """

    __slots__ = (
        "blocks",
        "end",
        "extra",
        "first",
        "first_hash",
        "head",
        "known",
        "parent",
        "prompt_tokens",
        "seq",
        "start",
        "texts",
    )

    def __init__(self, seq: StepSequence, parent: BlockHash | None, first: int) -> None:
        self.seq: StepSequence | None = seq
        """The sequence while it holds the blocks (their token ids are its own)."""
        self.parent = parent
        self.first = first
        """The chain index of the run's first block in the sequence."""
        self.end = first
        """The chain index after its last block."""
        self.first_hash: BlockHash | None = None
        """The first block's hash, for a run recorded under it (a prompt's) not its parent."""
        self.blocks: list[KVBlock] = []
        """The blocks, once the sequence let them go."""
        self.extra: tuple[Any, ...] | None = seq.extra_keys
        # Once the sequence let go: the prompt ids the run covers (at most a block), and the
        # sequence's generated ids and texts (references: no copy of a long answer).
        self.start = 0
        self.prompt_tokens = 0
        self.head: Seq[int] = ()
        self.known: Seq[int] = []
        self.texts: Seq[str] = ()

    def __len__(self) -> int:
        return self.end - self.first

    @property
    def dead(self) -> bool:
        """No block carries this run's name any more (all evicted, or the run was named).

        Its blocks were freed tail first, so the first block is the last one evicted.
        """
        return not self.blocks or self.blocks[0].deferred is not self

    def token_ids(self, index: int, size: int) -> Seq[int]:
        start = (self.first + index) * size
        stop = start + size
        if self.seq is not None:
            return self.seq.token_ids(start, stop)
        prompt = self.prompt_tokens
        ids = list(self.head[start - self.start : stop - self.start]) if start < prompt else []
        begin, end = max(start, prompt) - prompt, max(stop - prompt, 0)
        known = self.known
        ids.extend(known[begin:end])
        if end > len(known):
            ids.extend(map(output_token_id, self.texts[max(begin, len(known)) : end]))
        return ids

    def keep(self, seq: StepSequence, block_size: int) -> None:
        """``seq`` lets go of the blocks: mark them and keep what names them."""
        blocks = self.blocks = seq.blocks[self.first : self.end]
        for block in blocks:
            block.deferred = self
        start = self.start = self.first * block_size
        prompt = self.prompt_tokens = seq.sequence.prompt_tokens
        assert seq.prompt_ids is not None
        stop = self.end * block_size
        # a slice: a range's costs nothing, a list's is a copy (prompts never change)
        self.head = seq.prompt_ids[start : min(stop, prompt)] if start < prompt else ()
        self.known = seq.output_ids
        self.texts = seq.sequence.output
        self.seq = None


class DeferredNames:
    def __init__(self, pool: BlockPool, hasher: BlockHasher) -> None:
        self.pool = pool
        self.hasher = hasher
        self._by_parent: dict[BlockHash | None, dict[DeferredRun, None]] = {}
        self._by_head: dict[BlockHash, dict[DeferredRun, None]] = {}
        """Runs recorded under their first block's hash (prompts')."""
        self._released: deque[DeferredRun] = deque()
        """Runs whose sequence let go of the blocks, in that order: the order they die in,
        since the free queue evicts blocks in the order they were freed."""

    def defer(self, seq: StepSequence, full: int, *, prompt: bool = False) -> None:
        """Blocks ``seq.num_cached_blocks`` to ``full`` filled: their names wait for a lookup.

        ``prompt``: a new run is recorded under its first block's hash (computed here), and
        a deferred copy of that block, filled before, is named first, as at once it would be.
        """
        run = seq.deferred
        first = seq.num_cached_blocks
        if run is not None and run.end != first:
            self.resolve_run(run)  # not contiguous (a prefill chunk filled a block): settle it
            run = None
        if run is None:
            hashes = seq.hashes
            known = first + 1 if prompt else first
            if len(hashes) < known:  # a reset dropped the names before: compute the chain
                seq.extend_hashes(self.hasher, self.pool.block_size, known)
            if prompt:
                self.resolve_range(hashes, first, first + 1)
            run = DeferredRun(seq, hashes[first - 1] if first else None, first)
            if prompt:
                run.first_hash = hashes[first]
                self._by_head.setdefault(hashes[first], {})[run] = None
            else:
                self._by_parent.setdefault(run.parent, {})[run] = None
            seq.deferred = run
        run.end = full
        self.pool.num_deferred += full - first
        seq.num_cached_blocks = full

    def release(self, seq: StepSequence) -> None:
        """``seq`` frees its blocks: its run keeps their token ids to name them later, until
        the free queue has evicted them all."""
        run = seq.deferred
        if run is None:
            return
        seq.deferred = None
        run.keep(seq, self.pool.block_size)
        released = self._released
        released.append(run)
        while released and released[0].dead:  # forget the runs the queue has evicted
            self.forget(released.popleft())

    def resolve_range(self, hashes: Seq[BlockHash], first: int, stop: int) -> bool:
        """Name the deferred runs that may hold any of blocks ``first:stop`` of the chain
        ``hashes`` (a lookup's next block, or blocks about to be named: a deferred copy was
        filled earlier, and the first copy cached is the one lookups take); False if none.

        A run holding such a block with this chain behind it hangs off one of the chain's
        earlier hashes (or off no hash, if it starts the chain), and reaches ``first``.
        """
        by_parent, by_head = self._by_parent, self._by_head
        found = False
        if by_parent:
            for parent_index in range(stop - 2, -2, -1):
                runs = by_parent.get(hashes[parent_index] if parent_index >= 0 else None)
                if runs:
                    reaching = [run for run in runs if parent_index + 1 + len(run) > first]
                    for run in reaching:
                        self.resolve_run(run)
                    found = found or bool(reaching)
        if by_head:  # a run recorded under its first hash starts at that hash's index
            for index in range(min(stop, len(hashes)) - 1, -1, -1):
                runs = by_head.get(hashes[index])
                if runs:
                    reaching = [run for run in runs if index + len(run) > first]
                    for run in reaching:
                        self.resolve_run(run)
                    found = found or bool(reaching)
        return found

    def resolve_all(self) -> None:
        """Name every deferred block now (tests, and a check that nothing was lost)."""
        for index in (self._by_parent, self._by_head):
            for runs in list(index.values()):
                for run in list(runs):
                    self.resolve_run(run)

    def resolve_run(self, run: DeferredRun) -> None:
        self.forget(run)
        self._name(run)

    def forget(self, run: DeferredRun) -> None:
        """Drop a run from the index (it is named, or nothing is left to name)."""
        index: dict[Any, dict[DeferredRun, None]] = self._by_parent
        key: BlockHash | None = run.parent
        if run.first_hash is not None:
            index, key = self._by_head, run.first_hash
        runs = index.get(key)
        if runs is not None:
            runs.pop(run, None)
            if not runs:
                del index[key]

    def clear(self) -> None:
        """The prefix cache was reset: deferred names go with the computed ones."""
        for index in (self._by_parent, self._by_head):
            for runs in index.values():
                for run in runs:
                    for block in run.blocks:  # released runs' marks (held ones have none)
                        if block.deferred is run:
                            block.deferred = None
                    if run.seq is not None:
                        run.seq.deferred = None
        self._by_parent.clear()
        self._by_head.clear()
        self._released.clear()
        self.pool.num_deferred = 0

    def _name(self, run: DeferredRun) -> None:
        """Compute the run's chain and name the blocks that still carry its deferred name."""
        pool, hasher, size = self.pool, self.hasher, self.pool.block_size
        seq = run.seq
        held = seq is not None
        blocks = seq.blocks[run.first : run.end] if seq is not None else run.blocks
        parent = run.parent
        for index, block in enumerate(blocks):
            block_hash = hasher(parent, run.token_ids(index, size), run.extra)
            if seq is not None and len(seq.hashes) == run.first + index:
                seq.hashes.append(block_hash)
            if held or block.deferred is run:
                block.deferred = None
                pool.num_deferred -= 1
                pool.cache_one(block, block_hash)
            parent = block_hash
        if seq is not None and seq.deferred is run:
            seq.deferred = None
