#!/usr/bin/env python3
"""A small load generator for llmsim (or any vLLM OpenAI-compatible server), on the openai SDK.

Sends a fixed number of chat completions, either closed-loop (``--concurrency`` requests in
flight at all times) or open-loop (``--rate`` new requests per second, at most
``--concurrency`` in flight), and reports throughput, latency and time to first token
percentiles and the errors by status code.

Usage::

    llmsim serve --time-to-first-token 100ms --inter-token-latency 10ms &
    python examples/load_test.py --requests 500 --concurrency 32 --stream
    python examples/load_test.py --requests 300 --rate 50 --json   # open loop, JSON summary

Exits with status 0 when the share of failed requests is at most ``--max-error-rate`` percent
(default 0), 1 otherwise, so it can gate a CI job. Requires ``pip install openai``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from openai import APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
PROMPT = "Write one sentence about load testing an inference gateway."


@dataclass
class Outcome:
    """What one request did, as the client saw it."""

    latency: float
    ttft: float | None = None
    output_tokens: int = 0
    error: str | None = None


@dataclass
class Summary:
    elapsed: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.error is None]

    @property
    def errors(self) -> Counter[str]:
        return Counter(outcome.error for outcome in self.outcomes if outcome.error is not None)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="the OpenAI API root")
    parser.add_argument("--model", help="model or adapter (default: first of /v1/models)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLMSIM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "unused",
        help="bearer token (default: $LLMSIM_API_KEY, then $OPENAI_API_KEY)",
    )
    parser.add_argument("--requests", type=int, default=100, help="requests to send in total")
    parser.add_argument("--concurrency", type=int, default=16, help="most requests in flight")
    parser.add_argument("--rate", type=float, help="open loop: start this many requests per second")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request")
    parser.add_argument("--stream", action="store_true", help="stream, and measure TTFT")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument(
        "--max-error-rate", type=float, default=0.0, help="percent of failures still OK"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or (args.rate is not None and args.rate <= 0):
        parser.error("--requests, --concurrency and --rate must be positive")
    return args


def error_name(exc: Exception) -> str:
    """``429 RateLimitError``, ``APITimeoutError``, ...: the key errors are counted under."""
    if isinstance(exc, APIStatusError):
        return f"{exc.status_code} {type(exc).__name__}"
    return type(exc).__name__


async def one_request(client: AsyncOpenAI, model: str, args: argparse.Namespace) -> Outcome:
    started = time.perf_counter()
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
    try:
        if not args.stream:
            response = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=args.max_tokens
            )
            tokens = response.usage.completion_tokens if response.usage else 0
            return Outcome(latency=time.perf_counter() - started, output_tokens=tokens)
        ttft: float | None = None
        tokens = 0
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=args.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if ttft is None and any(choice.delta.content for choice in chunk.choices):
                ttft = time.perf_counter() - started
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return Outcome(latency=time.perf_counter() - started, ttft=ttft, output_tokens=tokens)
    except (APIStatusError, APIConnectionError, APITimeoutError) as exc:
        return Outcome(latency=time.perf_counter() - started, error=error_name(exc))


async def run(client: AsyncOpenAI, model: str, args: argparse.Namespace) -> Summary:
    """Every request is its own task; the semaphore caps those in flight."""
    in_flight = asyncio.Semaphore(args.concurrency)
    started = time.perf_counter()

    async def scheduled(index: int) -> Outcome:
        if args.rate is not None:
            await asyncio.sleep(max(0.0, started + index / args.rate - time.perf_counter()))
        async with in_flight:
            return await one_request(client, model, args)

    outcomes = await asyncio.gather(*(scheduled(index) for index in range(args.requests)))
    return Summary(elapsed=time.perf_counter() - started, outcomes=list(outcomes))


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` in 0..100), or ``None`` without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


def report(summary: Summary) -> dict[str, object]:
    ok = summary.ok
    latencies = [outcome.latency for outcome in ok]
    ttfts = [outcome.ttft for outcome in ok if outcome.ttft is not None]
    tokens = sum(outcome.output_tokens for outcome in ok)

    def spread(values: list[float]) -> dict[str, float | None]:
        return {f"p{share}": percentile(values, share) for share in (50, 90, 99)} | {
            "max": max(values) if values else None
        }

    return {
        "requests": len(summary.outcomes),
        "ok": len(ok),
        "failed": len(summary.outcomes) - len(ok),
        "errors": dict(sorted(summary.errors.items())),
        "elapsed_s": summary.elapsed,
        "requests_per_s": len(ok) / summary.elapsed if summary.elapsed else 0.0,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / summary.elapsed if summary.elapsed else 0.0,
        "latency_s": spread(latencies),
        "ttft_s": spread(ttfts),
    }


def _ms(value: object) -> str:
    return "-" if not isinstance(value, float) else f"{value * 1000:.0f} ms"


def print_report(result: dict[str, object]) -> None:
    print(
        f"completed  {result['ok']} ok, {result['failed']} failed in "
        f"{result['elapsed_s']:.2f} s ({result['requests_per_s']:.1f} requests/s, "
        f"{result['output_tokens_per_s']:.0f} output tokens/s)"
    )
    for name in ("latency_s", "ttft_s"):
        values = result[name]
        assert isinstance(values, dict)
        line = "  ".join(f"{key} {_ms(value)}" for key, value in values.items())
        print(f"{name.removesuffix('_s'):<10} {line}")
    errors = result["errors"]
    assert isinstance(errors, dict)
    for name, count in errors.items():
        print(f"error      {name}: {count}")


async def amain(args: argparse.Namespace) -> int:
    client = AsyncOpenAI(
        base_url=args.base_url, api_key=args.api_key, timeout=args.timeout, max_retries=0
    )
    async with client:
        model = args.model or (await client.models.list()).data[0].id
        if not args.json:
            mode = f"rate {args.rate}/s" if args.rate else "closed loop"
            print(
                f"{args.requests} requests to {args.base_url} ({model}), {mode}, "
                f"concurrency {args.concurrency}, stream={args.stream}"
            )
        summary = await run(client, model, args)
    result = report(summary)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    failed_share = 100 * (len(summary.outcomes) - len(summary.ok)) / len(summary.outcomes)
    return 0 if failed_share <= args.max_error_rate else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except (APIStatusError, APIConnectionError) as exc:  # /v1/models itself failed
        print(f"error: {error_name(exc)}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
