"""KV events on the wire: a pyzmq subscriber decodes them with vLLM's documented structs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq
from conftest import free_port, free_port_run

from llmsim.engine.block_hash import hash_block_chain
from llmsim.engine.prefix_hash import external_block_hash, make_block_hasher
from llmsim.observability.kv_events import KVEventPublisher, offset_endpoint_port
from llmsim.settings.kv_events import KVEventsConfig

RECEIVE_TIMEOUT_MS = 5000


# -- vLLM's event format (vllm/distributed/kv_events.py), written out for the consumer ------
class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class BlockStored(KVCacheEvent):
    block_hashes: list[int | bytes]
    parent_block_hash: int | bytes | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int | bytes]
    medium: str | None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


DECODER = msgspec.msgpack.Decoder(KVEventBatch)


# Later vLLM releases append fields to BlockStored; their decoders must read llmsim too.
class LaterBlockStored(KVCacheEvent, tag="BlockStored"):
    block_hashes: list[int | bytes]
    parent_block_hash: int | bytes | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None


class LaterBatch(EventBatch):
    events: list[LaterBlockStored | BlockRemoved | AllBlocksCleared]


class Subscriber:
    """A router's view: a SUB socket bound on loopback (the publisher connects to it)."""

    def __init__(self, port: int, topic: bytes = b"") -> None:
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)
        self.sub.bind(f"tcp://127.0.0.1:{port}")
        self.last_payload = b""

    def receive(self) -> tuple[bytes, int, KVEventBatch]:
        topic, seq, payload = self.sub.recv_multipart()
        self.last_payload = payload
        assert len(seq) == 8
        return topic, int.from_bytes(seq, "big"), DECODER.decode(payload)

    def close(self) -> None:
        self.sub.close(linger=0)
        self.ctx.term()


def connect(publisher: KVEventPublisher, subscriber: Subscriber) -> int:
    """Publish clears until one arrives (a SUB misses what was sent before it joined)."""
    for _ in range(100):
        publisher.all_blocks_cleared()
        publisher.step_finished()
        subscriber.sub.setsockopt(zmq.RCVTIMEO, 100)
        try:
            _, seq, batch = subscriber.receive()
        except zmq.Again:
            continue
        finally:
            subscriber.sub.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)
        assert isinstance(batch.events[0], AllBlocksCleared)
        # Drain clears that were already in flight.
        subscriber.sub.setsockopt(zmq.RCVTIMEO, 200)
        try:
            while True:
                _, seq, _ = subscriber.receive()
        except zmq.Again:
            subscriber.sub.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)
        return seq
    raise AssertionError("the subscriber never received a batch")


@pytest.fixture
def pair() -> Iterator[tuple[KVEventPublisher, Subscriber, int]]:
    port, replay = free_port(), free_port()
    subscriber = Subscriber(port, b"kv")
    config = KVEventsConfig(
        enable_kv_cache_events=True,
        endpoint=f"tcp://127.0.0.1:{port}",
        replay_endpoint=f"tcp://127.0.0.1:{replay}",
        topic="kv",
        buffer_steps=1000,
    )
    publisher = KVEventPublisher(config, rank=0)
    try:
        yield publisher, subscriber, replay
    finally:
        publisher.close()
        subscriber.close()


BLOCK = 16
HASHER = make_block_hasher("sha256_cbor", seed="0")


def store_prompt(publisher: KVEventPublisher, tokens: list[int], cached: set[bytes]) -> None:
    """What the block pool reports: the prompt's full blocks that were not cached yet."""
    hashes = hash_block_chain(HASHER, tokens, BLOCK)
    new = [i for i, h in enumerate(hashes) if h not in cached]
    if new:
        first = new[0]
        parent = hashes[first - 1] if first else None
        publisher.block_stored(
            [hashes[i] for i in new],
            parent,
            tokens[first * BLOCK : (new[-1] + 1) * BLOCK],
            BLOCK,
            None,
            None,
        )
        cached.update(hashes[i] for i in new)
    publisher.step_finished()


def test_k_blocks_stored_with_chained_parents(pair: tuple[KVEventPublisher, Subscriber, int]):
    publisher, subscriber, _ = pair
    last = connect(publisher, subscriber)
    tokens = list(range(1000, 1000 + 4 * BLOCK + 5))  # 4 full blocks and a partial one
    cached: set[bytes] = set()
    store_prompt(publisher, tokens, cached)
    topic, seq, batch = subscriber.receive()
    assert topic == b"kv"
    assert seq == last + 1
    assert batch.data_parallel_rank == 0
    assert batch.ts == pytest.approx(time.time(), abs=60)
    (event,) = batch.events
    assert isinstance(event, BlockStored)
    expected = [external_block_hash(h) for h in hash_block_chain(HASHER, tokens, BLOCK)]
    assert event.block_hashes == expected
    assert len(expected) == 4
    assert event.parent_block_hash is None
    assert event.token_ids == tokens[: 4 * BLOCK]
    assert (event.block_size, event.lora_id, event.medium) == (BLOCK, None, "GPU")
    assert all(isinstance(h, int) and 0 <= h < 2**64 for h in event.block_hashes)
    later = msgspec.msgpack.Decoder(LaterBatch).decode(subscriber.last_payload)
    assert isinstance(later.events[0], LaterBlockStored)
    assert later.events[0].block_hashes == expected
    assert later.events[0].lora_name is None

    # Repeating the prompt stores nothing new: no batch at all for that step.
    store_prompt(publisher, tokens, cached)
    # A longer prompt stores only its new block, chained to the cached ones.
    longer = tokens[: 4 * BLOCK] + list(range(5000, 5000 + BLOCK))
    store_prompt(publisher, longer, cached)
    _, seq2, batch2 = subscriber.receive()
    assert seq2 == seq + 1
    (event2,) = batch2.events
    assert isinstance(event2, BlockStored)
    assert event2.parent_block_hash == expected[-1]
    assert event2.token_ids == longer[4 * BLOCK :]
    assert event2.block_hashes == [external_block_hash(hash_block_chain(HASHER, longer, BLOCK)[-1])]


def test_removal_and_clear_in_one_step(pair: tuple[KVEventPublisher, Subscriber, int]) -> None:
    publisher, subscriber, _ = pair
    connect(publisher, subscriber)
    hashes = hash_block_chain(HASHER, list(range(3 * BLOCK)), BLOCK)
    publisher.block_removed(hashes[1:])
    publisher.all_blocks_cleared()
    publisher.step_finished()
    _, _, batch = subscriber.receive()
    removed, cleared = batch.events
    assert isinstance(removed, BlockRemoved)
    assert isinstance(cleared, AllBlocksCleared)
    assert removed.block_hashes == [external_block_hash(h) for h in hashes[1:]]
    assert removed.medium == "GPU"


def replay_dealer(port: int, start: int) -> list[tuple[int, bytes]]:
    """vLLM's replay protocol from a DEALER: [b"", start] in, [b"", seq, payload]* out."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send_multipart((b"", start.to_bytes(8, "big")))
        frames: list[tuple[int, bytes]] = []
        while True:
            empty, seq, payload = dealer.recv_multipart()
            assert empty == b""
            frames.append((int.from_bytes(seq, "big", signed=True), payload))
            if frames[-1][0] == -1:
                return frames
    finally:
        dealer.close(linger=0)
        ctx.term()


def test_replay_returns_missed_batches(pair: tuple[KVEventPublisher, Subscriber, int]) -> None:
    publisher, subscriber, replay_port = pair
    last = connect(publisher, subscriber)
    for block in range(3):
        publisher.block_removed([bytes([block]) * 32])
        publisher.step_finished()
    seqs = [subscriber.receive()[1] for _ in range(3)]
    assert seqs == [last + 1, last + 2, last + 3]
    frames = replay_dealer(replay_port, last + 2)
    assert [seq for seq, _ in frames] == [last + 2, last + 3, -1]
    assert frames[-1][1] == b""
    missed = DECODER.decode(frames[0][1]).events[0]
    assert isinstance(missed, BlockRemoved)
    assert missed.block_hashes == [external_block_hash(bytes([1]) * 32)]


def test_rank_publishes_on_its_own_port() -> None:
    base = free_port_run(2)
    subscriber = Subscriber(base + 1)
    config = KVEventsConfig(enable_kv_cache_events=True, endpoint=f"tcp://127.0.0.1:{base}")
    publisher = KVEventPublisher(config, rank=1, int_hashes=False)
    try:
        assert publisher.publisher.endpoint == f"tcp://127.0.0.1:{base + 1}"
        connect(publisher, subscriber)
        publisher.block_removed([b"\x07" * 32])
        publisher.step_finished()
        _, _, batch = subscriber.receive()
        assert batch.data_parallel_rank == 1
        (removed,) = batch.events
        assert isinstance(removed, BlockRemoved)
        assert removed.block_hashes == [b"\x07" * 32]
    finally:
        publisher.close()
        subscriber.close()


def test_endpoint_offsets() -> None:
    assert offset_endpoint_port("tcp://*:5557", 0) == "tcp://*:5557"
    assert offset_endpoint_port("tcp://*:5557", 3) == "tcp://*:5560"
    assert offset_endpoint_port("inproc://cache", 2) == "inproc://cache_dp2"
    assert offset_endpoint_port(None, 2) is None


def test_step_never_blocks_when_the_queue_is_full() -> None:
    config = KVEventsConfig(
        enable_kv_cache_events=True, endpoint="inproc://full-queue", max_queue_size=1
    )
    publisher = KVEventPublisher(config)
    try:
        started = time.monotonic()
        for _ in range(2000):
            publisher.all_blocks_cleared()
            publisher.step_finished()
        assert time.monotonic() - started < 5.0
    finally:
        publisher.close()


def test_config_defaults_follow_vllm() -> None:
    config = KVEventsConfig.model_validate({"enable_kv_cache_events": True})
    assert config.publisher == "zmq"
    assert config.publishes
    assert config.endpoint == "tcp://*:5557"
    assert config.replay_endpoint is None
    assert (config.buffer_steps, config.hwm, config.topic) == (10_000, 100_000, "")
    assert not KVEventsConfig().publishes
    assert not KVEventsConfig(enable_kv_cache_events=True, publisher="null").publishes
