"""The KV-cache block pool: fixed-size blocks, reference counts and an LRU free queue.

As in vLLM's ``BlockPool``: a block in use has a reference count above zero; a block no
sequence uses sits in the free queue, least recently freed first. The queue is a deque whose
entries a prefix-cache hit leaves behind instead of removing them (the block knows how many
entries it has, so a stale one is skipped when it comes up): cheaper than an ordered dict
for the allocate-and-free traffic of every decoding sequence. A free block may still
be *cached* (it carries the hash of the tokens it holds), so a later prompt with the same
prefix can take it back instead of computing it again. Allocating a new block pops the
front of the free queue, evicting whatever it cached. Cached free blocks count as free, so
``usage`` is blocks in use over all blocks, as vLLM reports ``kv_cache_usage_perc``.

As in vLLM, identical blocks are not de-duplicated: every full block is named, several
blocks may carry one name, a lookup takes the first of them still cached and evicting one
leaves the others. A block may also carry a *deferred* name, one the pool has not computed
yet (:mod:`llmsim.engine.step.deferred_names`); evicting the block drops it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from llmsim.engine.block_hash import BlockHash
from llmsim.engine.kv_listener import KVCacheListener, NullKVCacheListener
from llmsim.engine.step.residency import BlockResidency


class KVBlock:
    """One block of ``block_size`` token slots."""

    __slots__ = ("block_hash", "block_id", "deferred", "queued", "ref_cnt")

    def __init__(self, block_id: int, ref_cnt: int = 0) -> None:
        self.block_id = block_id
        self.ref_cnt = ref_cnt
        self.queued = 0
        """Entries of this block in the free queue; only the last may stand for it."""
        self.block_hash: BlockHash | None = None
        self.deferred: object | None = None
        """Whoever will name this block when a lookup needs it (None: no deferred name)."""

    def __repr__(self) -> str:
        return f"KVBlock({self.block_id}, ref={self.ref_cnt}, cached={self.block_hash is not None})"


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int, listener: KVCacheListener) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.listener = listener
        self._made: list[KVBlock] = []
        """The blocks used so far, by id; the others wait, never used, at the front of the
        free queue (in id order, as vLLM's queue starts) without an object yet."""
        self._queue: deque[KVBlock] = deque()
        self._num_free = num_blocks
        self._cached: dict[BlockHash, KVBlock | dict[int, KVBlock]] = {}
        """Name -> the block carrying it, or the blocks (by id, first cached first)."""
        self.num_named = 0
        self.num_deferred = 0
        self.residency: BlockResidency | None = None
        """Samples block lifetimes for vLLM's KV residency metrics, when they are on."""

    @property
    def listener(self) -> KVCacheListener:
        return self._listener

    @listener.setter
    def listener(self, listener: KVCacheListener) -> None:
        self._listener = listener
        # Whether anyone hears stored and removed blocks (a null listener does not).
        self.reports = not isinstance(listener, NullKVCacheListener)

    @property
    def blocks(self) -> list[KVBlock]:
        """Every block, by id (for tests and plots).

        Blocks are made when first allocated: the default 131,072-token cache is 8,192
        blocks, about 0.7 MB and 8 ms of start-up per instance, and a fleet of many small
        instances uses few of them. Asking for all of them makes the rest, which join the
        front of the free queue, where they were waiting.
        """
        made = self._made
        if len(made) < self.num_blocks:
            fresh = [KVBlock(index) for index in range(len(made), self.num_blocks)]
            for block in fresh:
                block.queued = 1
            made.extend(fresh)
            self._queue.extendleft(reversed(fresh))
        return made

    # -- views ------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks no sequence uses, cached or not."""
        return self._num_free

    @property
    def num_used(self) -> int:
        return self.num_blocks - self._num_free

    @property
    def num_cached(self) -> int:
        """Blocks carrying a name, computed or deferred."""
        return self.num_named + self.num_deferred

    def usage(self) -> float:
        return self.num_used / self.num_blocks

    def cached_block(self, block_hash: BlockHash) -> KVBlock | None:
        """The first block still cached under this name (vLLM's ``get_cached_block``)."""
        found = self._cached.get(block_hash)
        if found is None or isinstance(found, KVBlock):
            return found
        return next(iter(found.values()))

    def free_order(self) -> list[int]:
        """Free block ids, next to be evicted first (for tests and plots)."""
        never_used = range(len(self._made), self.num_blocks)
        return [*never_used, *(block.block_id for block in self._live_entries())]

    # -- transitions ------------------------------------------------------------
    def touch(self, blocks: Iterable[KVBlock]) -> None:
        """Take cached blocks back into use (a prefix-cache hit); their queue entries go stale."""
        residency = self.residency
        for block in blocks:
            if block.ref_cnt == 0:
                self._num_free -= 1
            block.ref_cnt += 1
            if residency is not None:
                residency.accessed(block)

    def allocate(self, count: int) -> list[KVBlock]:
        """``count`` fresh blocks from the front of the free queue; the caller checked room."""
        taken: list[KVBlock] = []
        self.allocate_into(taken, count)
        return taken

    def allocate_into(self, blocks: list[KVBlock], count: int) -> None:
        """:meth:`allocate`, appending to ``blocks`` (a sequence's own list)."""
        if count > self._num_free:
            raise ValueError(f"{count} blocks wanted, {self._num_free} free")
        self._num_free -= count
        first = len(blocks)
        made = self._made
        fresh = min(count, self.num_blocks - len(made))
        if fresh == 1:  # one never-used block (a decoding sequence opening one)
            block = KVBlock(len(made), 1)
            made.append(block)
            blocks.append(block)
            count -= 1
        elif fresh > 0:  # never-used blocks come first, made in one go
            start = len(made)
            new = [KVBlock(block_id, 1) for block_id in range(start, start + fresh)]
            made.extend(new)
            blocks.extend(new)
            count -= fresh
        if count:
            self._take_free(blocks, count)
        if self.residency is not None:
            self.residency.allocated(blocks[first:])

    def _take_free(self, blocks: list[KVBlock], count: int) -> None:
        """``count`` blocks off the front of the free queue, evicting what they cached."""
        popleft, append = self._queue.popleft, blocks.append
        evicted: list[BlockHash] = []
        while count:
            block = popleft()
            block.queued -= 1
            if block.ref_cnt or block.queued:  # in use, or freed again later: stale
                continue
            if block.block_hash is not None:
                evicted.append(block.block_hash)
                self._uncache(block)
            elif block.deferred is not None:
                block.deferred = None
                self.num_deferred -= 1
            block.ref_cnt = 1
            append(block)
            count -= 1
        if evicted and self.reports:
            for block_hash in evicted:  # vLLM reports each evicted block on its own
                self.listener.block_removed([block_hash])

    def free(self, blocks: Iterable[KVBlock]) -> None:
        """Release blocks in the given order: the first freed is the first evicted."""
        queue = self._queue
        before = len(queue)
        append = queue.append
        for block in blocks:
            block.ref_cnt -= 1
            if not block.ref_cnt:
                append(block)
                block.queued += 1
        self._num_free += len(queue) - before
        if len(queue) > 2 * self.num_blocks:  # many hits left stale entries: drop them
            self._compact()

    def cache(
        self,
        blocks: Sequence[KVBlock],
        hashes: Sequence[BlockHash],
        parent: BlockHash | None,
        token_ids: Sequence[int],
        lora_id: int | None,
        lora_name: str | None = None,
    ) -> None:
        """Name full blocks by their hashes (chain order) and report the newly cached ones.

        ``parent`` is the hash before the first block; ``token_ids`` hold every block's
        tokens back to back. Each run of newly cached blocks is reported with its parent.
        """
        if not self.reports:  # nothing to report: name the blocks and be done
            for block, block_hash in zip(blocks, hashes, strict=True):
                self.cache_one(block, block_hash)
            return
        size = self.block_size
        run: list[BlockHash] = []
        run_parent, run_start = parent, 0
        previous = parent
        for index, (block, block_hash) in enumerate(zip(blocks, hashes, strict=True)):
            if block.block_hash is None:
                self.cache_one(block, block_hash)
                if not run:
                    run_parent, run_start = previous, index
                run.append(block_hash)
            elif run:
                self._stored(
                    run, run_parent, token_ids[run_start * size : index * size], lora_id, lora_name
                )
                run = []
            previous = block_hash
        if run:
            end = run_start + len(run)
            stored = token_ids[run_start * size : end * size]
            self._stored(run, run_parent, stored, lora_id, lora_name)

    def cache_one(self, block: KVBlock, block_hash: BlockHash) -> None:
        """Name one block (unless it has a name), beside any other block of that name;
        reports nothing (a pool without listener, or a decode step's block)."""
        if block.block_hash is not None:
            return
        block.block_hash = block_hash
        self.num_named += 1
        found = self._cached.get(block_hash)
        if found is None:
            self._cached[block_hash] = block
        elif isinstance(found, KVBlock):
            self._cached[block_hash] = {found.block_id: found, block.block_id: block}
        else:
            found[block.block_id] = block

    def _stored(
        self,
        hashes: list[BlockHash],
        parent: BlockHash | None,
        token_ids: Sequence[int],
        lora_id: int | None,
        lora_name: str | None,
    ) -> None:
        self.listener.block_stored(
            hashes, parent, list(token_ids), self.block_size, lora_id, lora_name
        )

    def clear_cache(self) -> int:
        """Forget every cached block (blocks in use stay in use); return how many were cached.

        Deferred names are the owner's to drop (it knows which blocks carry one).
        """
        count = self.num_named + self.num_deferred
        for found in self._cached.values():
            for block in (found,) if isinstance(found, KVBlock) else found.values():
                block.block_hash = None
        self._cached.clear()
        self.num_named = 0
        if self.residency is not None:
            self.residency.reset()
        self.listener.all_blocks_cleared()
        return count

    def _uncache(self, block: KVBlock) -> None:
        block_hash = block.block_hash
        assert block_hash is not None
        found = self._cached.get(block_hash)
        if found is block:
            del self._cached[block_hash]
        elif found is not None and not isinstance(found, KVBlock):
            found.pop(block.block_id, None)
            if len(found) == 1:
                self._cached[block_hash] = next(iter(found.values()))
        block.block_hash = None
        self.num_named -= 1

    def _live_entries(self) -> list[KVBlock]:
        """The free blocks in queue order: each block's last entry, if the block is free."""
        seen: set[int] = set()
        live: list[KVBlock] = []
        for block in reversed(self._queue):
            if block.block_id not in seen:
                seen.add(block.block_id)
                if block.ref_cnt == 0:
                    live.append(block)
        live.reverse()
        return live

    def _compact(self) -> None:
        live = self._live_entries()
        for block in self._queue:
            block.queued = 0
        for block in live:
            block.queued = 1
        self._queue = deque(live)
