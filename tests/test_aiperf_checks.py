"""A benchmark client's checks on the step model's metrics, as AIPerf makes them.

AIPerf scrapes ``/metrics`` while it runs a load and warns when a counter or a histogram's
``_count``, ``_sum`` or ``_bucket`` goes down between two scrapes (it takes that for a
server restart and drops the series), when a request's ``usage`` differs from the tokens the
client counts by more than 10 %, and when the server reports token usage without any
``prompt_tokens_details.cached_tokens``; it sets the server's scraped TTFT beside the one it
measured. Here a real server with a Hugging Face tokenizer (built by the test, nothing
downloaded) takes eight concurrent streams whose prompts share a few system prompts, as
AIPerf's ``--num-prefix-prompts`` makes them, while a scraper reads ``/metrics``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from conftest import RunningServer, start_server
from promql import Scrape, parse, select
from test_tokenization import CORPUS, build_tokenizer, render

CONCURRENCY = 8
RUN_SECONDS = 2.5
SCRAPE_EVERY = 0.1
USAGE_DIFF_LIMIT = 0.10
"""AIPerf's ``USAGE_PCT_DIFF_THRESHOLD``: a larger difference is a token-count discrepancy."""
WORDS = " ".join(CORPUS).split()
SYSTEM_PROMPTS = [
    " ".join(random.Random(seed).choices(WORDS, k=120)) for seed in range(3)
]  # each spans several 16-token blocks, so later requests find them cached


@dataclass
class Answer:
    """What the client saw of one streamed chat completion."""

    messages: list[dict[str, str]]
    ttft: float
    text: str
    usage: dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Any]]:
    directory = tmp_path_factory.mktemp("aiperf") / "tok"
    tokenizer = build_tokenizer(directory)
    server = start_server(
        [
            "--latency-model",
            "step",
            "--inter-token-latency",
            "3ms",
            "--tokenizer",
            str(directory),
            "--enable-prompt-tokens-details",
            "--max-model-len",
            "2048",
            "--no-access-log",
        ],
        tmp_path_factory.mktemp("aiperf-server"),
    )
    yield server, tokenizer
    server.stop()


@pytest.fixture(scope="module")
def run(served: tuple[RunningServer, Any]) -> tuple[list[Answer], list[Scrape]]:
    """Eight streams for a few seconds while ``/metrics`` is scraped every 100 ms."""
    server, _ = served
    return asyncio.run(_load(server.base_url))


async def _load(base_url: str) -> tuple[list[Answer], list[Scrape]]:
    answers: list[Answer] = []
    scrapes: list[Scrape] = []
    async with aiohttp.ClientSession() as session:
        scrapes.append(await _scrape(session, base_url))
        deadline = time.monotonic() + RUN_SECONDS
        scraper = asyncio.create_task(_scraper(session, base_url, scrapes, deadline))
        await asyncio.gather(
            *(_client(session, base_url, seed, deadline, answers) for seed in range(CONCURRENCY))
        )
        await scraper
        scrapes.append(await _scrape(session, base_url))  # every stream has ended
    return answers, scrapes


async def _scrape(session: aiohttp.ClientSession, base_url: str) -> Scrape:
    async with session.get(base_url + "/metrics") as response:
        return parse(await response.text())


async def _scraper(
    session: aiohttp.ClientSession, base_url: str, scrapes: list[Scrape], deadline: float
) -> None:
    while time.monotonic() < deadline:
        scrapes.append(await _scrape(session, base_url))
        await asyncio.sleep(SCRAPE_EVERY)


async def _client(
    session: aiohttp.ClientSession, base_url: str, seed: int, deadline: float, answers: list[Answer]
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        messages = [
            {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)},
            {"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))},
        ]
        answers.append(await _chat(session, base_url, messages, rng.randint(4, 16)))


async def _chat(
    session: aiohttp.ClientSession, base_url: str, messages: list[dict[str, str]], max_tokens: int
) -> Answer:
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    pieces: list[str] = []
    usage: dict[str, Any] = {}
    first = None
    sent = time.perf_counter()
    async with session.post(base_url + "/v1/chat/completions", json=body) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    first = time.perf_counter() if first is None else first
                    pieces.append(choice["delta"]["content"])
            usage = chunk.get("usage") or usage
    assert first is not None
    assert usage
    return Answer(messages, first - sent, "".join(pieces), usage)


def _growing_series(scrape: Scrape) -> dict[tuple[str, Any], float]:
    """The samples that may never go down: counters, histograms' counts, sums and buckets."""
    return {
        key: value
        for key, value in scrape.items()
        if key[0].startswith("vllm:") and key[0].endswith(("_total", "_count", "_sum", "_bucket"))
    }


def _total(scrapes: list[Scrape], name: str) -> float:
    """The increase of ``name`` (summed over its label sets) from the first to the last scrape."""
    first, last = select(scrapes[0], name), select(scrapes[-1], name)
    return sum(last.values()) - sum(first.values())


def test_no_counter_or_histogram_ever_goes_down(run: tuple[list[Answer], list[Scrape]]) -> None:
    answers, scrapes = run
    assert len(answers) > 3 * CONCURRENCY
    assert len(scrapes) > 5
    decreases = []
    for before, after in itertools.pairwise(scrapes):
        previous = _growing_series(before)
        for key, value in _growing_series(after).items():
            if value < previous.get(key, 0.0):
                decreases.append((key, previous[key], value))
    assert not decreases  # AIPerf's "Detected histogram counter reset"


def test_histograms_are_consistent_in_every_scrape(
    run: tuple[list[Answer], list[Scrape]],
) -> None:
    _, scrapes = run
    for scrape in scrapes:
        for (name, labels), count in scrape.items():
            if not (name.startswith("vllm:") and name.endswith("_count")):
                continue
            base = name.removesuffix("_count")
            buckets = sorted(
                (float(dict(bucket_labels)["le"]), value)
                for bucket_labels, value in select(scrape, base + "_bucket", **dict(labels)).items()
            )
            assert buckets[-1] == (float("inf"), count), base
            assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)), base
            assert scrape[(base + "_sum", labels)] >= 0.0, base


def test_server_token_totals_equal_the_clients_usage(
    run: tuple[list[Answer], list[Scrape]],
) -> None:
    answers, scrapes = run
    prompt = sum(answer.usage["prompt_tokens"] for answer in answers)
    completion = sum(answer.usage["completion_tokens"] for answer in answers)
    assert _total(scrapes, "vllm:prompt_tokens_total") == prompt
    assert _total(scrapes, "vllm:generation_tokens_total") == completion
    assert _total(scrapes, "vllm:request_success_total") == len(answers)


def test_usage_matches_the_clients_own_token_counts(
    served: tuple[RunningServer, Any], run: tuple[list[Answer], list[Scrape]]
) -> None:
    _, tokenizer = served
    answers, _ = run
    for answer in answers:
        rendered = tokenizer.encode(render(answer.messages), add_special_tokens=False).ids
        assert answer.usage["prompt_tokens"] == len(rendered)
        counted = len(tokenizer.encode(answer.text, add_special_tokens=False).ids)
        completion = answer.usage["completion_tokens"]
        assert abs(completion - counted) <= USAGE_DIFF_LIMIT * counted, answer.text


def test_shared_prefixes_are_reported_as_cached(run: tuple[list[Answer], list[Scrape]]) -> None:
    answers, scrapes = run
    cached = [
        (answer.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        for answer in answers
    ]
    # only the first requests of each system prompt, started together, find nothing cached
    assert sum(1 for tokens in cached if tokens > 0) >= len(answers) // 2
    prompts = [answer.usage["prompt_tokens"] for answer in answers]
    assert all(0 <= tokens < prompt for tokens, prompt in zip(cached, prompts, strict=True))
    hits = _total(scrapes, "vllm:prefix_cache_hits_total")
    assert hits > 0
    assert hits == sum(cached)
    assert _total(scrapes, "vllm:prefix_cache_queries_total") == sum(
        answer.usage["prompt_tokens"] for answer in answers
    )


def test_server_ttft_is_at_most_the_clients_and_close_to_it(
    run: tuple[list[Answer], list[Scrape]],
) -> None:
    answers, scrapes = run
    count = _total(scrapes, "vllm:time_to_first_token_seconds_count")
    assert count == len(answers)
    server = _total(scrapes, "vllm:time_to_first_token_seconds_sum") / count
    client = sum(answer.ttft for answer in answers) / len(answers)
    print(f"mean TTFT: server {server * 1e3:.2f} ms, client {client * 1e3:.2f} ms")
    assert 0.003 <= server <= client  # no token before the first 3 ms step has ended
    assert client - server < 0.025 + 0.5 * server  # the HTTP round trip on a loaded machine
