"""KV events end to end: a real ``llmsim serve --latency-model step --kv-events-config ...``
and a pyzmq subscriber decoding with structs written from vLLM's documented format.

The subscriber joins the live stream (a SUB socket misses what was sent before it joined, the
ZeroMQ slow-joiner), so the checks read the full history from the replay socket, which keeps
every batch, and the live stream is checked against it.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq
from conftest import RunningServer, free_port
from prometheus_client.parser import text_string_to_metric_families
from test_kv_events import (
    DECODER,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    Subscriber,
    replay_dealer,
)
from test_kv_hash import reference_chain

MODEL = "llmsim/sim-model"
SEED = "0"
BLOCK = 16
DEV = {"VLLM_SERVER_DEV_MODE": "1", "PYTHONHASHSEED": SEED}


def call(server: RunningServer, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.base_url + path, data=data, headers={"Content-Type": "application/json"}
    )
    if body is None and path.startswith(("/sleep", "/wake_up")):
        request.method = "POST"
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def complete(server: RunningServer, prompt: str) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 1}
    status, answer = call(server, "/v1/completions", body)
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


def token_ids(server: RunningServer, prompt: str) -> list[int]:
    status, answer = call(server, "/tokenize", {"model": MODEL, "prompt": prompt})
    assert status == 200
    ids: list[int] = answer["tokens"]
    return ids


def history(replay: int) -> list[tuple[int, KVEventBatch]]:
    """Every batch published so far, from the replay socket; the end frame is checked."""
    frames = replay_dealer(replay, 0)
    assert frames[-1] == (-1, b"")
    return [(seq, DECODER.decode(payload)) for seq, payload in frames[:-1]]


def events_after(replay: int, seen: int, until: Callable[[list[Any]], bool]) -> list[Any]:
    """Events of batches after the first ``seen`` ones, polled until ``until`` holds (5 s)."""
    deadline = time.monotonic() + 5
    while True:
        batches = history(replay)
        events = [event for _, batch in batches[seen:] for event in batch.events]
        if until(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def stored_hashes(events: list[Any]) -> list[int]:
    return [h for e in events if isinstance(e, BlockStored) for h in e.block_hashes]


def kv_usage(server: RunningServer) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:kv_cache_usage_perc":
            return float(family.samples[0].value)
    raise AssertionError("no vllm:kv_cache_usage_perc")


def words(count: int, tag: str) -> str:
    return " ".join(f"{tag}{k}" for k in range(count))


def test_kv_events_over_http_in_step_mode(llmsim_server: Callable[..., RunningServer]) -> None:
    port, replay = free_port(), free_port()
    subscriber = Subscriber(port)
    try:
        config = {
            "enable_kv_cache_events": True,
            "endpoint": f"tcp://127.0.0.1:{port}",
            "replay_endpoint": f"tcp://127.0.0.1:{replay}",
        }
        server = llmsim_server(
            *("--latency-model", "step", "--no-dashboard", "--block-size", str(BLOCK)),
            *("--max-model-len", "256", "--kv-cache-size", "256"),  # 16 blocks
            *("--prefix-caching-hash-algo", "sha256_cbor", "--enable-prompt-tokens-details"),
            *("--kv-events-config", json.dumps(config), "--enable-sleep-mode"),
            env=DEV,
        )
        check_events(server, subscriber, replay)
    finally:
        subscriber.close()


def check_events(server: RunningServer, subscriber: Subscriber, replay: int) -> None:
    # 1. A prompt of k full blocks stores exactly k blocks, chained, with its token ids, named
    #    as vLLM names them (sha256 over canonical CBOR, seeded by PYTHONHASHSEED, low 64 bits).
    prompt = words(90, "a")
    ids = token_ids(server, prompt)
    k = len(ids) // BLOCK
    assert k >= 3
    complete(server, prompt)
    events = events_after(replay, 0, lambda evs: len(stored_hashes(evs)) >= k)
    stored = [e for e in events if isinstance(e, BlockStored)]
    assert len(stored_hashes(events)) == k
    assert stored[0].parent_block_hash is None
    for before, after in itertools.pairwise(stored):
        assert after.parent_block_hash == before.block_hashes[-1]
    assert [t for e in stored for t in e.token_ids] == ids[: k * BLOCK]
    assert all(e.block_size == BLOCK and e.lora_id is None for e in stored)
    reference = reference_chain("sha256_cbor", SEED, ids, BLOCK)
    expected = [int.from_bytes(h, "big") & 0xFFFF_FFFF_FFFF_FFFF for h in reference]
    assert stored_hashes(events) == expected

    # 2. Repeating it stores nothing new (its blocks are found in the prefix cache).
    seen = len(history(replay))
    answer = complete(server, prompt)
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == k * BLOCK
    time.sleep(0.3)
    assert stored_hashes(events_after(replay, seen, lambda _: True)) == []

    # 3. Eviction under pressure removes exactly the evicted hashes: a router's index (stored
    #    minus removed) then predicts the prefix-cache hits the server reports.
    index: set[int] = set(expected)
    seen = len(history(replay))
    for tag in ("b", "c", "d"):
        complete(server, words(90, tag))
    events = events_after(replay, seen, lambda evs: any(isinstance(e, BlockRemoved) for e in evs))
    time.sleep(0.3)
    events = events_after(replay, seen, lambda _: True)
    for event in events:
        if isinstance(event, BlockStored):
            assert not index & set(event.block_hashes)
            index.update(event.block_hashes)
        elif isinstance(event, BlockRemoved):
            assert set(event.block_hashes) <= index  # only blocks that were stored
            index.difference_update(event.block_hashes)
    assert any(isinstance(e, BlockRemoved) for e in events)
    assert len(index) <= 16
    leading = 0
    for block_hash in expected[: (len(ids) - 1) // BLOCK]:
        if block_hash not in index:
            break
        leading += 1
    answer = complete(server, prompt)
    details = answer["usage"].get("prompt_tokens_details") or {}
    assert details.get("cached_tokens", 0) == leading * BLOCK

    # 4. The live stream carries the same batches as the replay socket, which lost none.
    batches = history(replay)
    assert [seq for seq, _ in batches] == list(range(len(batches)))
    subscriber.sub.setsockopt(zmq.RCVTIMEO, 200)
    live: dict[int, bytes] = {}
    try:
        while True:
            _, seq, _ = subscriber.receive()
            live[seq] = subscriber.last_payload
    except zmq.Again:
        pass
    frames = dict(replay_dealer(replay, 0))
    assert all(frames[seq] == payload for seq, payload in live.items())
    # Replay from a later sequence number returns just the batches from there on.
    start = len(batches) - 2
    assert [seq for seq, _ in replay_dealer(replay, start)] == [start, start + 1, -1]

    # 5. Sleep at level 0 only pauses scheduling: the prefix cache stays, nothing is cleared.
    seen = len(history(replay))
    assert call(server, "/sleep?level=0")[0] == 200
    assert call(server, "/wake_up?tags=scheduling")[0] == 200
    answer = complete(server, prompt)
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    time.sleep(0.3)
    events = events_after(replay, seen, lambda _: True)
    assert not any(isinstance(e, AllBlocksCleared) for e in events)

    # 6. Level 1 publishes AllBlocksCleared and empties the cache; a request sent while
    #    asleep queues (vLLM answers no error) and runs on the empty cache after wake-up.
    seen = len(history(replay))
    assert call(server, "/sleep?level=1")[0] == 200
    events = events_after(replay, seen, lambda evs: bool(evs))
    assert any(isinstance(e, AllBlocksCleared) for e in events)
    assert kv_usage(server) == 0.0
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(complete, server, prompt)
        time.sleep(0.5)
        assert not pending.done()
        seen = len(history(replay))
        assert call(server, "/wake_up")[0] == 200
        answer = pending.result(timeout=10)
    assert (answer["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0) == 0
    events = events_after(replay, seen, lambda evs: len(stored_hashes(evs)) >= k)
    assert stored_hashes(events)[:k] == expected
