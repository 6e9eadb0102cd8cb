"""P/D in step mode, from outside: a prefill and a decode instance run ``--latency-model step``;
the decode instance's first token follows the KV transfer, and it publishes the blocks it
received as vLLM's decode side does."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from conftest import RunningServer, free_port
from test_kv_events import DECODER, BlockStored, replay_dealer
from test_pd import first_token_time, post, success_by_reason

MODEL = "llmsim/sim-model"
STEP = ["--latency-model", "step", "--inter-token-latency", "10ms", "--no-dashboard"]
PREFILL = ["--prefill-time-per-token", "30ms"]  # a local prefill of the prompt takes seconds


def stored_blocks(replay_port: int) -> list[BlockStored]:
    """Every BlockStored event the instance published so far (from its replay buffer)."""
    events: list[BlockStored] = []
    for seq, payload in replay_dealer(replay_port, 0):
        if seq >= 0:
            batch = DECODER.decode(payload)
            events.extend(e for e in batch.events if isinstance(e, BlockStored))
    return events


def test_pd_pair_in_step_mode(llmsim_server: Callable[..., RunningServer]) -> None:
    prefill = llmsim_server(*STEP, *PREFILL, env={"VLLM_NIXL_SIDE_CHANNEL_PORT": "5700"})
    replay = free_port()
    events = {
        "enable_kv_cache_events": True,
        "endpoint": f"tcp://127.0.0.1:{free_port()}",
        "replay_endpoint": f"tcp://127.0.0.1:{replay}",
    }
    decode = llmsim_server(
        *STEP,
        *PREFILL,
        "--kv-cache-transfer-latency",
        "300ms",
        "--kv-events-config",
        json.dumps(events),
    )
    messages = [{"role": "user", "content": "Tell me a long story. " * 20}]
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": 5,
        "ignore_eos": True,
    }
    prefill_request = {
        **request,
        "max_tokens": 1,
        "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False},
    }
    started = time.monotonic()
    answer = post(prefill, "/v1/chat/completions", prefill_request)
    assert time.monotonic() - started >= 2.5  # the prefill instance computed the prompt
    assert answer["usage"]["completion_tokens"] == 1
    assert answer["choices"][0]["finish_reason"] == "length"
    assert success_by_reason(prefill)["length"] == 1
    params = answer["kv_transfer_params"]
    assert params["do_remote_prefill"] is True

    ttft, text = first_token_time(decode, {**request, "kv_transfer_params": params})
    assert 0.25 <= ttft < 2.0  # the transfer, not the 3 s prefill
    assert text

    ids = post(decode, "/tokenize", {"model": MODEL, "messages": messages})["tokens"]
    full = len(ids) // 16
    deadline = time.monotonic() + 10
    stored = stored_blocks(replay)
    while len([h for e in stored for h in e.block_hashes]) < full and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = stored_blocks(replay)
    received = [token for event in stored for token in event.token_ids]
    assert received[: full * 16] == ids[: full * 16]
    assert stored[0].parent_block_hash is None
    for before, after in itertools.pairwise(stored):
        assert after.parent_block_hash == before.block_hashes[-1]  # one chain

    # A second decode of the same prompt stores none of its blocks again.
    first_token_time(decode, {**request, "kv_transfer_params": params})
    hashes = [h for event in stored_blocks(replay) for h in event.block_hashes]
    assert len(hashes) == len(set(hashes))
