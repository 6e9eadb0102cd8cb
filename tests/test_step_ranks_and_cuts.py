"""Step mode with data-parallel ranks (each its own engine, cache and events port) and with
injected stream cuts (a cut stream frees its sequence's KV blocks at once)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import RunningServer, free_port_run
from prometheus_client.parser import text_string_to_metric_families
from test_kv_events import DECODER, BlockStored, replay_dealer

MODEL = "llmsim/sim-model"
STEP = ["--latency-model", "step", "--no-dashboard", "--enable-prompt-tokens-details"]


def post(base_url: str, path: str, body: dict[str, Any], rank: int | None = None) -> dict[str, Any]:
    """POST ``body``; with ``rank``, to that data-parallel engine (vLLM's header)."""
    headers = {"Content-Type": "application/json"}
    if rank is not None:
        headers["X-data-parallel-rank"] = str(rank)
    request = urllib.request.Request(
        base_url + path, data=json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def metric(base_url: str, name: str) -> float:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"no {name}")


def stored(replay_port: int) -> list[tuple[int | None, BlockStored]]:
    """(data_parallel_rank, event) of every BlockStored this rank published so far."""
    result: list[tuple[int | None, BlockStored]] = []
    for seq, payload in replay_dealer(replay_port, 0):
        if seq >= 0:
            batch = DECODER.decode(payload)
            rank = batch.data_parallel_rank
            result.extend((rank, e) for e in batch.events if isinstance(e, BlockStored))
    return result


def cached_tokens(answer: dict[str, Any]) -> int:
    details = answer["usage"].get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens", 0))


def test_each_rank_has_its_own_engine_cache_and_events(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    events, replay = free_port_run(2), free_port_run(2)
    config = {
        "enable_kv_cache_events": True,
        "endpoint": f"tcp://127.0.0.1:{events}",
        "replay_endpoint": f"tcp://127.0.0.1:{replay}",
    }
    server = llmsim_server(
        *STEP, "-dp", "2", "--kv-events-config", json.dumps(config), env={"PYTHONHASHSEED": "0"}
    )
    prompt = " ".join(f"w{k}" for k in range(60))
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 1}
    url = server.base_url  # both engines behind one port, as vLLM's -dp runs them
    post(url, "/v1/completions", body, rank=0)
    assert cached_tokens(post(url, "/v1/completions", body, rank=0)) > 0  # rank 0 cached it
    assert cached_tokens(post(url, "/v1/completions", body, rank=1)) == 0  # rank 1 has its own

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (stored(replay) and stored(replay + 1)):
        time.sleep(0.05)
    first, second = stored(replay), stored(replay + 1)
    assert first
    assert second
    assert {rank for rank, _ in first} == {0}
    assert {rank for rank, _ in second} == {1}
    # Both ranks stored the same prompt: with one PYTHONHASHSEED the same block names (as in
    # vLLM, each process otherwise draws its own seed), each on its own socket.
    assert [h for _, e in first for h in e.block_hashes] == [
        h for _, e in second for h in e.block_hashes
    ]


def test_a_cut_stream_frees_its_blocks_at_once(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        *STEP, "--stream-cut-rate", "100", "--inter-token-latency", "10ms", "--seed", "3"
    )
    tokens = 300  # 3 s of decoding if nothing cut it
    prompt = " ".join(f"w{k}" for k in range(200))
    body = {"model": MODEL, "prompt": prompt, "max_tokens": tokens, "ignore_eos": True}
    early_cuts = 0
    for _ in range(4):
        received, started = stream_until_cut(server, {**body, "stream": True})
        assert b"[DONE]" not in received
        cut_at = time.monotonic()
        assert cut_at - started < 8.0
        while time.monotonic() - cut_at < 0.5:  # far less than the decoding left
            if metric(server.base_url, "vllm:kv_cache_usage_perc") == 0.0:
                break
            time.sleep(0.02)
        freed_after = time.monotonic() - cut_at
        assert metric(server.base_url, "vllm:kv_cache_usage_perc") == 0.0
        assert metric(server.base_url, "vllm:num_requests_running") == 0.0
        if received.count(b"data: {") < tokens - 100 and freed_after < 0.5:
            early_cuts += 1  # a second or more of decoding was left: the cut freed it
    assert early_cuts >= 1


def stream_until_cut(server: RunningServer, body: dict[str, Any]) -> tuple[bytes, float]:
    """A raw HTTP stream read until the server closes it; (bytes, when it started)."""
    payload = json.dumps(body).encode()
    received = b""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        while time.monotonic() - started < 10:
            chunk = conn.recv(65536)
            if not chunk:
                break  # the server cut the stream
            received += chunk
    return received, started
