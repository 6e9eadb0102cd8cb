"""``--kv-blocks`` seen from outside: a real ``llmsim serve --latency-model per-token`` over
HTTP, where a repeated prompt hits the prefix cache, reports its cached tokens and reaches
its first token sooner (docs/scheduling.md)."""

from __future__ import annotations

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
