#!/usr/bin/env python3
"""Compare round-robin with prefix-aware routing over replicas that cache prompt prefixes.

Sends ``--requests`` chat requests, each starting with one of ``--prompts`` long shared system
prompts (picked at random, with a fixed seed), to the replica URLs, first round-robin, then by prefix affinity (the same system prompt
always goes to the same replica). For each policy it prints, per replica, the mean time to first
token and the prefix-cache hit rate read from ``vllm:prefix_cache_hits_total`` /
``vllm:prefix_cache_queries_total``.

Usage (two ``llmsim serve --latency-model step`` instances on 8001 and 8002)::

    python examples/prefix_routing.py http://127.0.0.1:8001 http://127.0.0.1:8002

Works against llmsim and vLLM alike. Standard library plus aiohttp and prometheus-client.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Policy = Callable[[int, str], int]


def system_prompts(count: int, words: int) -> list[str]:
    """``count`` distinct long system prompts."""
    return [" ".join(f"r{p}w{k}" for k in range(words)) for p in range(count)]


async def counters(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """The replica's prefix-cache (hits, queries) counters."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    values = {"vllm:prefix_cache_hits": 0.0, "vllm:prefix_cache_queries": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name in values:
            values[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return values["vllm:prefix_cache_hits"], values["vllm:prefix_cache_queries"]


async def ttft(session: aiohttp.ClientSession, url: str, system: str, question: str) -> float:
    """Stream one chat request and return the time to its first content token."""
    body = {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ],
        "max_tokens": 8,
        "stream": True,
    }
    sent = time.monotonic()
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        async for line in response.content:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if any(c.get("delta", {}).get("content") for c in chunk["choices"]):
                    return time.monotonic() - sent
    raise RuntimeError("the stream produced no content")


async def run_policy(
    name: str, policy: Policy, urls: Sequence[str], prompts: list[str], requests: int
) -> None:
    async with aiohttp.ClientSession() as session:
        before = [await counters(session, url) for url in urls]
        times: dict[int, list[float]] = {index: [] for index in range(len(urls))}
        rng = random.Random(7)
        for number in range(requests):
            system = rng.choice(prompts)
            replica = policy(number, system)
            question = f"question {number}: what does rule {number} say?"
            times[replica].append(await ttft(session, urls[replica], system, question))
        after = [await counters(session, url) for url in urls]
    print(f"\n{name}")
    for index, url in enumerate(urls):
        hits = after[index][0] - before[index][0]
        queries = after[index][1] - before[index][1]
        rate = f"{hits / queries:6.1%}" if queries else "     -"
        mean = statistics.mean(times[index]) * 1000 if times[index] else 0.0
        print(f"  {url}  requests {len(times[index]):3}  hit rate {rate}  mean TTFT {mean:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", help="replica base URLs")
    parser.add_argument("--prompts", type=int, default=8, help="distinct system prompts")
    parser.add_argument("--words", type=int, default=1000, help="tokens per system prompt")
    parser.add_argument("--requests", type=int, default=64)
    args = parser.parse_args()
    urls = [url.rstrip("/") for url in args.urls]
    prompts = system_prompts(args.prompts, args.words)

    def round_robin(number: int, system: str) -> int:
        return number % len(urls)

    def prefix_affinity(number: int, system: str) -> int:
        digest = hashlib.blake2b(system.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % len(urls)

    asyncio.run(run_policy("round-robin", round_robin, urls, prompts, args.requests))
    asyncio.run(run_policy("prefix affinity", prefix_affinity, urls, prompts, args.requests))


if __name__ == "__main__":
    main()
