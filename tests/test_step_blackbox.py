"""The step latency model seen from outside: a real ``llmsim serve --latency-model step`` over
HTTP. A burst that overflows the KV cache, a shared prefix that shortens TTFT, ITL that grows
with the batch and a long prompt stalling a running stream (docs/scheduling.md).

Modelled times are large (20-50 ms steps, long prefills) and checks are ratios with wide
margins, so a loaded machine cannot blur them.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import statistics
from typing import Any

from test_scheduling import (
    COMPLETIONS,
    MODEL,
    StartServer,
    call,
    client_session,
    metric,
    running,
    scrape,
    settle,
    started_stream,
    stream,
    waiting,
)

STEP = ["--latency-model", "step", "--mode", "random", "--no-dashboard"]


def words(count: int, tag: str = "w") -> str:
    """``count`` tokens of the built-in tokenizer: one short word with its space each."""
    return "".join(f" {tag}{index}" for index in range(count))


def completion(prompt: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **extra,
    }


async def test_a_burst_that_overflows_the_cache_is_held_back_preempted_and_completed(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server(
        *STEP,
        "--kv-cache-size", "1024",
        "--max-model-len", "512",
        "--inter-token-latency", "10ms",
    )  # fmt: skip
    async with client_session() as session:
        tasks = [
            asyncio.ensure_future(
                call(session, server, "POST", COMPLETIONS, completion(words(100, f"p{k}x"), 120))
            )
            for k in range(14)
        ]
        peak_usage = peak_waiting = peak_running = 0.0
        preemptions = 0.0
        for _ in range(400):
            samples = await scrape(session, server)
            peak_usage = max(peak_usage, metric(samples, "vllm:kv_cache_usage_perc"))
            peak_waiting = max(peak_waiting, waiting(samples))
            peak_running = max(peak_running, running(samples))
            preemptions = metric(samples, "vllm:num_preemptions_total")
            if all(task.done() for task in tasks):
                break
            await asyncio.sleep(0.03)
        replies = await settle(*tasks)
        assert all(reply.status == 200 for reply in replies)
        assert all(reply.json()["usage"]["completion_tokens"] == 120 for reply in replies)
        # 64 blocks of 16; a sequence needs 7 blocks for its prompt and up to 14 in all
        assert 2 <= peak_running <= 9
        assert peak_waiting > 0
        assert peak_usage >= 0.85
        assert preemptions > 0
        after = await scrape(session, server)
        assert metric(after, "vllm:kv_cache_usage_perc") == 0.0
        assert running(after) == 0
        assert waiting(after) == 0
        assert metric(after, "vllm:request_success_total", finished_reason="length") == 14
        # Each request's preemptions, observed as it finished, add up to the engine's.
        preempted = metric(after, "vllm:request_num_preemptions_sum")
        assert preempted == metric(after, "vllm:num_preemptions_total") > 0
        assert metric(after, "vllm:request_num_preemptions_count") == 14


async def test_a_shared_prefix_reaches_its_first_token_much_sooner(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server(
        *STEP,
        "--inter-token-latency", "20ms",
        "--prefill-time-per-token", "1ms",
        "--enable-prompt-tokens-details",
    )  # fmt: skip
    prefix = words(1000)
    async with client_session() as session:
        first = await stream(
            session,
            server,
            COMPLETIONS,
            completion(prefix + " first question", 3, stream_options={"include_usage": True}),
        )
        second = await stream(
            session,
            server,
            COMPLETIONS,
            completion(prefix + " another one here", 3, stream_options={"include_usage": True}),
        )
        samples = await scrape(session, server)
    ttft_first = first.content_times[0] - first.sent_at
    ttft_second = second.content_times[0] - second.sent_at
    assert ttft_first > 0.8  # 1 000 prompt tokens at 1 ms
    assert ttft_second < 0.5 * ttft_first
    usage_first, usage_second = first.events[-1]["usage"], second.events[-1]["usage"]
    assert "prompt_tokens_details" not in usage_first
    cached = usage_second["prompt_tokens_details"]["cached_tokens"]
    assert cached == 1000 // 16 * 16
    assert metric(samples, "vllm:prefix_cache_hits_total") == cached
    assert metric(samples, "vllm:prefix_cache_queries_total") == (
        usage_first["prompt_tokens"] + usage_second["prompt_tokens"]
    )


def median_gap(times: list[float]) -> float:
    return statistics.median(b - a for a, b in itertools.pairwise(times))


async def test_itl_grows_with_the_number_of_streams_by_the_modelled_amount(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server(
        *STEP,
        "--inter-token-latency", "20ms",
        "--decode-time-per-sequence", "10ms",
    )  # fmt: skip
    async with client_session() as session:
        alone = await stream(session, server, COMPLETIONS, completion("hello", 25))
        crowd = await settle(
            *(stream(session, server, COMPLETIONS, completion(f"hello {k}", 25)) for k in range(8))
        )
    single = median_gap(alone.content_times)
    together = statistics.median(median_gap(result.content_times) for result in crowd)
    assert 0.018 < single < 0.035
    # 8 decoding sequences: 20 ms + 7 x 10 ms = 90 ms per step
    assert 0.75 * 0.090 < together < 1.35 * 0.090
    assert together / single > 2.5


async def test_a_long_prompt_stalls_a_running_stream_by_its_prefill_chunk(
    llmsim_server: StartServer,
) -> None:
    common = (*STEP, "--inter-token-latency", "20ms", "--prefill-time-per-token", "500us")
    stalls = {}
    for budget in ("8192", "256"):
        server = llmsim_server(*common, "--max-num-batched-tokens", budget)
        async with client_session() as session:
            task = await started_stream(session, server, COMPLETIONS, completion("tick", 80))
            await asyncio.sleep(0.2)
            long = await call(session, server, "POST", COMPLETIONS, completion(words(2000), 1))
            result = await asyncio.wait_for(task, 30)
        assert long.status == 200
        assert len(result.content()) == 80
        stalls[budget] = max(
            b - a for a, b in zip(result.content_times, result.content_times[1:], strict=False)
        )
    # the whole 2 000-token prefill runs in one step: about 20 ms + 1 s
    assert 0.8 < stalls["8192"] < 1.6
    # chunks of at most 255 prompt tokens next to the decode: about 20 ms + 128 ms
    assert stalls["256"] < 0.35
    assert stalls["256"] < stalls["8192"] / 4


async def test_step_mode_keeps_the_rest_working(llmsim_server: StartServer) -> None:
    """Disconnects free blocks at once, n and prompt lists, 429 and run-time step settings."""
    server = llmsim_server(
        *STEP,
        "--inter-token-latency", "20ms",
        "--max-num-seqs", "4",
        "--max-waiting-queue-length", "2",
    )  # fmt: skip
    async with client_session() as session:
        cut = await stream(session, server, COMPLETIONS, completion(words(200), 200), close_after=3)
        assert cut.closed_early
        for _ in range(100):
            samples = await scrape(session, server)
            if metric(samples, "vllm:kv_cache_usage_perc") == 0.0 and running(samples) == 0:
                break
            await asyncio.sleep(0.02)
        assert metric(samples, "vllm:kv_cache_usage_perc") == 0.0
        assert metric(samples, "vllm:request_success_total", finished_reason="abort") == 1

        body = completion([words(40), words(40, "v")], 4, n=2)
        reply = await call(session, server, "POST", COMPLETIONS, body)
        assert reply.status == 200
        choices = reply.json()["choices"]
        assert sorted(choice["index"] for choice in choices) == [0, 1, 2, 3]
        assert reply.json()["usage"]["completion_tokens"] == 16

        # four sequences run, two wait, the next request does not fit the queue
        busy = [
            asyncio.ensure_future(call(session, server, "POST", COMPLETIONS, completion("x", 30)))
            for _ in range(6)
        ]
        await asyncio.sleep(0.2)
        full = await call(session, server, "POST", COMPLETIONS, completion("y", 2))
        assert full.status == 429
        await settle(*busy)

        update = await call(
            session, server, "POST", "/admin/config", {"decode_time_per_sequence": "5ms"}
        )
        assert update.status == 200, update.body
        current = await call(session, server, "GET", "/admin/config")
        assert current.json()["settings"]["decode_time_per_sequence"] == "5ms"
        refused = await call(
            session, server, "POST", "/admin/config", {"latency_model": "constant"}
        )
        assert refused.status == 400
        assert "restart" in refused.json()["error"]["message"]


async def test_step_mode_lora_slots_fake_metrics_and_drain(llmsim_server: StartServer) -> None:
    """A cold adapter pays its load, a base request is not held behind it, metric overrides
    pin the step gauges, and SIGTERM lets a running stream finish."""
    server = llmsim_server(
        *STEP,
        "--inter-token-latency", "20ms",
        "--lora", "sql-lora",
        "--max-loras", "1",
        "--max-cpu-loras", "1",
        "--lora-modules", "chat-lora=/adapters/chat",
        "--lora-load-latency", "400ms",
        "--shutdown-timeout", "10s",
    )  # fmt: skip
    async with client_session() as session:
        warm = await call(
            session, server, "POST", COMPLETIONS, {**completion("a", 3), "model": "sql-lora"}
        )
        assert warm.status == 200
        cold_task = asyncio.ensure_future(
            call(session, server, "POST", COMPLETIONS, {**completion("b", 3), "model": "chat-lora"})
        )
        await asyncio.sleep(0.05)
        base = await call(session, server, "POST", COMPLETIONS, completion("c", 3))
        cold = await cold_task
        assert cold.status == 200
        assert base.status == 200
        assert cold.elapsed > 0.4  # the cold adapter's load
        assert base.elapsed < 0.3  # not held behind it

        pinned = await call(
            session, server, "POST", "/admin/metrics", {"kv_cache_usage_perc": 0.75}
        )
        assert pinned.status == 200, pinned.body
        samples = await scrape(session, server)
        assert metric(samples, "vllm:kv_cache_usage_perc") == 0.75
        await call(session, server, "DELETE", "/admin/metrics")

        task = await started_stream(session, server, COMPLETIONS, completion("tick", 40))
        server.process.send_signal(signal.SIGTERM)
        result = await asyncio.wait_for(task, 30)
    assert len(result.content()) == 40
    assert result.done
    assert server.process.wait(15) == 0


async def test_step_mode_publishes_kv_events_a_router_can_follow(
    llmsim_server: StartServer,
) -> None:
    """BlockStored events carry the prompt's token ids in blocks, chained by parent hash."""
    import json as jsonlib

    import zmq
    from conftest import free_port
    from test_kv_events import BlockStored, Subscriber

    port = free_port()
    subscriber = Subscriber(port)
    try:
        config = {"enable_kv_cache_events": True, "endpoint": f"tcp://127.0.0.1:{port}"}
        server = llmsim_server(*STEP, "--kv-events-config", jsonlib.dumps(config))
        stored: list[BlockStored] = []
        async with client_session() as session:
            for attempt in range(20):  # a SUB socket misses what was sent before it joined
                prompt = words(40, f"a{attempt}x")  # a new prompt each time: new blocks
                tokens = await call(session, server, "POST", "/tokenize", {"prompt": prompt})
                ids = tokens.json()["tokens"]
                reply = await call(session, server, "POST", COMPLETIONS, completion(prompt, 2))
                assert reply.status == 200
                try:
                    _, _, batch = subscriber.receive()
                except zmq.Again:
                    continue
                stored = [event for event in batch.events if isinstance(event, BlockStored)]
                if stored:
                    break
        assert stored, "no BlockStored event arrived"
        event = stored[0]
        assert event.block_size == 16
        assert event.token_ids == ids[: 16 * len(event.block_hashes)]
        assert len(event.block_hashes) == 2  # 40 prompt tokens: two full blocks
    finally:
        subscriber.close()
