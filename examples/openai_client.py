#!/usr/bin/env python3
"""Talk to llmsim (or any vLLM OpenAI-compatible server) with the official openai SDK.

Runs three calls and prints what came back:

1. a chat completion;
2. a streamed chat completion, printing tokens as they arrive and measuring the time to
   first token (TTFT) as the client sees it;
3. a text completion.

Usage::

    llmsim serve --time-to-first-token 150ms --inter-token-latency 20ms &
    python examples/openai_client.py --base-url http://127.0.0.1:8000/v1

Exits with status 0 when every call succeeded and 1 on the first error.
Requires ``pip install openai``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from openai import OpenAI, OpenAIError
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "Say hello to the gateway team in one sentence."},
]


class ExampleError(Exception):
    """The server answered, but not with what this example expects."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"the server's OpenAI API root (default: {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model or LoRA adapter to use (default: the first entry of /v1/models)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLMSIM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "unused",
        help="bearer token, needed only if the server runs with --api-key "
        "(default: $LLMSIM_API_KEY, then $OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=32, help="output limit per call (default: 32)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for each call (default: 60)"
    )
    return parser.parse_args(argv)


def pick_model(client: OpenAI, requested: str | None) -> str:
    """The requested model, or the first one the server lists (its base model)."""
    if requested:
        return requested
    models = client.models.list()
    if not models.data:
        raise ExampleError("/v1/models returned no models")
    return models.data[0].id


def chat(client: OpenAI, model: str, max_tokens: int) -> None:
    response = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=max_tokens)
    if not response.choices:
        raise ExampleError("chat completion returned no choices")
    choice = response.choices[0]
    print(f"chat: {choice.message.content!r}")
    print(f"      finish_reason={choice.finish_reason} usage={_usage(response.usage)}")


def streamed_chat(client: OpenAI, model: str, max_tokens: int) -> None:
    started = time.perf_counter()
    first_token_at: float | None = None
    content_chunks = 0
    finish_reason: str | None = None
    completion_tokens: int | None = None

    print("stream: ", end="", flush=True)
    stream = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            text = choice.delta.content
            if text:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                content_chunks += 1
                print(text, end="", flush=True)
            if choice.finish_reason is not None:
                finish_reason = choice.finish_reason
    elapsed = time.perf_counter() - started
    print()

    if finish_reason is None:
        raise ExampleError("the stream ended without a finish_reason")
    ttft = "n/a" if first_token_at is None else f"{(first_token_at - started) * 1000:.0f} ms"
    print(
        f"        ttft={ttft} total={elapsed * 1000:.0f} ms chunks={content_chunks} "
        f"completion_tokens={completion_tokens} finish_reason={finish_reason}"
    )


def text_completion(client: OpenAI, model: str, max_tokens: int) -> None:
    response = client.completions.create(
        model=model, prompt="The three most useful gateway metrics are", max_tokens=max_tokens
    )
    if not response.choices:
        raise ExampleError("text completion returned no choices")
    choice = response.choices[0]
    print(f"completion: {choice.text!r}")
    print(f"            finish_reason={choice.finish_reason} usage={_usage(response.usage)}")


def _usage(usage: CompletionUsage | None) -> str:
    if usage is None:
        return "none"
    return f"{usage.prompt_tokens}+{usage.completion_tokens}={usage.total_tokens}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    client = OpenAI(
        base_url=args.base_url, api_key=args.api_key, timeout=args.timeout, max_retries=0
    )
    try:
        model = pick_model(client, args.model)
        print(f"server: {args.base_url}  model: {model}")
        chat(client, model, args.max_tokens)
        streamed_chat(client, model, args.max_tokens)
        text_completion(client, model, args.max_tokens)
    except (OpenAIError, ExampleError) as exc:
        print(f"\nerror: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
