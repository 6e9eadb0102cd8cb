"""KV-cache events on ZeroMQ, encoded and sent exactly as vLLM's ``ZmqEventPublisher``.

Wire format (``vllm/distributed/kv_events.py``, vLLM v0.11, with the ``lora_name`` field later
releases append to ``BlockStored``): each engine step with KV-cache
changes becomes one ``KVEventBatch`` ``[ts, [event, ...], data_parallel_rank]``, msgpack-encoded
by msgspec as array-like structs; each event is an array whose first item is its tag
(``"BlockStored"``, ``"BlockRemoved"``, ``"AllBlocksCleared"``). A batch goes out as the
multipart message ``[topic, 8-byte big-endian sequence number, payload]`` on a PUB socket.
A ROUTER socket (``replay_endpoint``) answers ``[identity, b"", start_seq]`` with every
buffered batch from ``start_seq`` on, then ``[identity, b"", -1 as 8 bytes, b""]``.

Encoding and sending happen on a publisher thread fed by a queue, as in vLLM, so an engine
step only appends to a list and hands one object over: it never waits on a socket.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from itertools import count
from typing import Any

import msgspec
import zmq

from llmsim.engine.block_hash import BlockHash
from llmsim.engine.prefix_hash import ExternalBlockHash, external_block_hash, int_block_hashes
from llmsim.settings.kv_events import KVEventsConfig

log = logging.getLogger("llmsim.kv_events")

MEDIUM_GPU = "GPU"
END_SEQ = (-1).to_bytes(8, "big", signed=True)
POLL_INTERVAL = 0.1
SHUTDOWN_TIMEOUT = 1.0


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    """Base of the tagged event structs: the tag is the class name."""


class BlockStored(KVCacheEvent):
    block_hashes: list[ExternalBlockHash]
    parent_block_hash: ExternalBlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    """Appended by later vLLM releases (after ``medium``); decoders of the v0.11 layout
    ignore trailing fields, decoders of the later layout require it."""


class BlockRemoved(KVCacheEvent):
    block_hashes: list[ExternalBlockHash]
    medium: str | None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


def offset_endpoint_port(endpoint: str | None, rank: int) -> str | None:
    """Rank N publishes on the endpoint's port + N (``inproc://`` names get ``_dpN``)."""
    if not endpoint or rank == 0:
        return endpoint
    if "inproc" in endpoint:
        return f"{endpoint}_dp{rank}"
    if "tcp" in endpoint:
        if ":" not in endpoint:
            return endpoint
        base, _, port = endpoint.rpartition(":")
        return f"{base}:{int(port) + rank}"
    raise ValueError("Invalid endpoint: must contain 'inproc' or 'tcp'")


def _binds(endpoint: str) -> bool:
    """vLLM's rule: wildcard, IPv6 any, ipc and inproc addresses bind; others connect."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


class ZmqEventPublisher:
    """A PUB socket, an optional replay ROUTER socket and the thread that serves both."""

    def __init__(self, config: KVEventsConfig, rank: int = 0) -> None:
        self.rank = rank
        self.endpoint = offset_endpoint_port(config.endpoint, rank)
        self.replay_endpoint = offset_endpoint_port(config.replay_endpoint, rank)
        self._topic = config.topic.encode("utf-8")
        self._queue: queue.Queue[EventBatch | None] = queue.Queue(maxsize=config.max_queue_size)
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=config.buffer_steps)
        self._seq = count()
        self.dropped = 0
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.set_hwm(config.hwm)
        self._replay: zmq.Socket[bytes] | None = None
        try:
            assert self.endpoint is not None  # the config always has one
            (self._pub.bind if _binds(self.endpoint) else self._pub.connect)(self.endpoint)
            if self.replay_endpoint is not None:
                self._replay = self._ctx.socket(zmq.ROUTER)
                self._replay.bind(self.replay_endpoint)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="kv-events", daemon=True)
        self._thread.start()

    def publish(self, batch: EventBatch) -> None:
        """Hand a batch to the publisher thread; never blocks (a full queue drops it)."""
        if batch.data_parallel_rank is None:
            batch.data_parallel_rank = self.rank
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped += 1
            log.warning("KV event queue full: dropped a batch (%d so far)", self.dropped)

    def close(self) -> None:
        """Send what is queued (for up to a second), stop the thread, close the sockets."""
        if not self._running:
            return
        self._running = False
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=SHUTDOWN_TIMEOUT)
        self._thread.join(timeout=SHUTDOWN_TIMEOUT * 2)
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._pub.close(linger=0)
        if self._replay is not None:
            self._replay.close(linger=0)
        self._ctx.term()

    def _serve(self) -> None:
        encoder = msgspec.msgpack.Encoder()
        while True:
            if self._replay is not None and self._replay.poll(0):
                try:
                    self._answer_replay()
                except zmq.ZMQError:
                    log.exception("KV event replay failed")
            try:
                batch = self._queue.get(timeout=POLL_INTERVAL)
            except queue.Empty:
                if not self._running:
                    return
                continue
            if batch is None:
                return
            seq = next(self._seq)
            payload = encoder.encode(batch)
            try:
                self._pub.send_multipart((self._topic, seq.to_bytes(8, "big"), payload))
            except zmq.ZMQError:
                log.exception("KV event publishing failed")
            self._buffer.append((seq, payload))

    def _answer_replay(self) -> None:
        assert self._replay is not None
        frames = self._replay.recv_multipart()
        if len(frames) != 3:
            log.warning("invalid KV event replay request: %d frames", len(frames))
            return
        client, _, start = frames
        start_seq = int.from_bytes(start, "big")
        for seq, payload in list(self._buffer):
            if seq >= start_seq:
                self._replay.send_multipart((client, b"", seq.to_bytes(8, "big"), payload))
        self._replay.send_multipart((client, b"", END_SEQ, b""))


class KVEventPublisher:
    """A :class:`~llmsim.engine.kv_listener.KVCacheListener` that publishes one batch per step.

    The engine's block pool reports stores, removals and clears as they happen; at the end
    of each step the collected events (if any) leave as one ``KVEventBatch``.
    """

    def __init__(self, config: KVEventsConfig, rank: int = 0, *, int_hashes: bool | None = None):
        self.publisher = ZmqEventPublisher(config, rank)
        self._as_int = int_block_hashes() if int_hashes is None else int_hashes
        self._events: list[BlockStored | BlockRemoved | AllBlocksCleared] = []

    def _external(self, block_hash: BlockHash) -> ExternalBlockHash:
        return external_block_hash(block_hash, self._as_int)

    def block_stored(
        self,
        block_hashes: Sequence[BlockHash],
        parent_block_hash: BlockHash | None,
        token_ids: Sequence[int],
        block_size: int,
        lora_id: int | None,
        lora_name: str | None,
    ) -> None:
        parent = None if parent_block_hash is None else self._external(parent_block_hash)
        self._events.append(
            BlockStored(
                block_hashes=[self._external(h) for h in block_hashes],
                parent_block_hash=parent,
                token_ids=list(token_ids),
                block_size=block_size,
                lora_id=lora_id,
                medium=MEDIUM_GPU,
                lora_name=lora_name,
            )
        )

    def block_removed(self, block_hashes: Sequence[BlockHash]) -> None:
        self._events.append(
            BlockRemoved(block_hashes=[self._external(h) for h in block_hashes], medium=MEDIUM_GPU)
        )

    def all_blocks_cleared(self) -> None:
        self._events.append(AllBlocksCleared())

    def step_finished(self) -> None:
        if not self._events:
            return
        events, self._events = self._events, []
        self.publisher.publish(KVEventBatch(ts=time.time(), events=events))

    def close(self) -> None:
        self.step_finished()
        self.publisher.close()
