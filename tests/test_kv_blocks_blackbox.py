"""``--kv-blocks`` seen from outside: a real ``llmsim serve --latency-model per-token`` over
HTTP, where a repeated prompt hits the prefix cache, reports its cached tokens and reaches
its first token sooner, and the constant model publishing its blocks as KV events
(docs/scheduling.md)."""

from __future__ import annotations

import json
import time

from conftest import free_port
from test_kv_events import BlockStored, Subscriber
from test_kv_events_e2e import (
    BLOCK,
    DEV,
    SEED,
    complete,
    events_after,
    history,
    stored_hashes,
    token_ids,
)
from test_kv_hash import reference_chain
from test_scheduling import COMPLETIONS, StartServer, client_session, metric, scrape, stream
from test_step_blackbox import completion, words


async def test_a_repeated_prompt_hits_the_cache_and_its_first_token_comes_sooner(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server(
        "--latency-model", "per-token",
        "--kv-blocks",
        "--mode", "random",
        "--no-dashboard",
        "--prefill-time-per-token", "1ms",
        "--inter-token-latency", "5ms",
        "--enable-prompt-tokens-details",
    )  # fmt: skip
    prompt = words(600)
    body = completion(prompt, 3, stream_options={"include_usage": True})
    async with client_session() as session:
        first = await stream(session, server, COMPLETIONS, body)
        second = await stream(session, server, COMPLETIONS, body)
        samples = await scrape(session, server)
    ttft_first = first.content_times[0] - first.sent_at
    ttft_second = second.content_times[0] - second.sent_at
    assert ttft_first > 0.5  # 600 prompt tokens at 1 ms
    assert ttft_second < 0.5 * ttft_first
    usage_first, usage_second = first.events[-1]["usage"], second.events[-1]["usage"]
    assert "prompt_tokens_details" not in usage_first
    cached = usage_second["prompt_tokens_details"]["cached_tokens"]
    assert cached == (usage_second["prompt_tokens"] - 1) // 16 * 16
    assert metric(samples, "vllm:prefix_cache_hits_total") == cached
    assert metric(samples, "vllm:prefix_cache_queries_total") == 2 * usage_first["prompt_tokens"]
    assert metric(samples, "vllm:kv_cache_usage_perc") == 0.0


def test_the_constant_model_publishes_its_prompt_blocks(llmsim_server: StartServer) -> None:
    port, replay = free_port(), free_port()
    subscriber = Subscriber(port)
    try:
        config = {
            "enable_kv_cache_events": True,
            "endpoint": f"tcp://127.0.0.1:{port}",
            "replay_endpoint": f"tcp://127.0.0.1:{replay}",
        }
        server = llmsim_server(
            *("--kv-blocks", "--no-dashboard", "--block-size", str(BLOCK)),
            *("--prefix-caching-hash-algo", "sha256_cbor", "--enable-prompt-tokens-details"),
            *("--kv-events-config", json.dumps(config)),
            env=DEV,
        )
        prompt = words(90, "a")
        ids = token_ids(server, prompt)
        full = len(ids) // BLOCK
        complete(server, prompt)
        events = events_after(replay, 0, lambda evs: len(stored_hashes(evs)) >= full)
        reference = reference_chain("sha256_cbor", SEED, ids, BLOCK)
        expected = [int.from_bytes(h, "big") & 0xFFFF_FFFF_FFFF_FFFF for h in reference]
        assert stored_hashes(events) == expected
        assert all(isinstance(e, BlockStored) for e in events)

        seen = len(history(replay))
        answer = complete(server, prompt)
        assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == (
            (len(ids) - 1) // BLOCK * BLOCK
        )
        time.sleep(0.3)  # whatever the repeat published has arrived by now
        assert stored_hashes(events_after(replay, seen, lambda _: True)) == []
    finally:
        subscriber.close()
