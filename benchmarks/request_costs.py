"""What one non-streaming chat request costs llmsim beyond HTTP, step by step.

Scenario (b) compares llmsim with a bare aiohttp app that sends a fixed body. This
script times, in one process and without HTTP, the steps llmsim adds to each request
of (b) — parse and validate the body, count the prompt's tokens, generate and pace
64 tokens, build and encode the answer — so the report can say how much of the gap
to the ceiling is work a vLLM-compatible server cannot skip.

    python benchmarks/request_costs.py [--rounds 5] [--count 20000]

Prints one line per step: the best of ``--rounds`` runs of ``--count`` calls, in µs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from llmsim.api.http.jsonio import dumps, loads
from llmsim.api.http.sse import ResponseMeta
from llmsim.api.openai.chat import chat_body
from llmsim.api.openai.prompts import chat_prompt
from llmsim.api.openai.schemas import ChatCompletionRequest
from llmsim.engine import Engine, GenerationRequest, Target
from llmsim.settings.model import Settings

BODY = (
    b'{"model":"llmsim/sim-model","messages":[{"role":"user","content":"Summarise the '
    b'benefits of load-aware routing for LLM inference."}],"max_tokens":64,"ignore_eos":true}'
)


def best_of(rounds: int, count: int, step: Callable[[], object]) -> float:
    """Microseconds per call, best round."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            step()
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


async def measure(rounds: int, count: int) -> list[tuple[str, float]]:
    settings = Settings(config=None, max_running_requests=100_000)
    engine = Engine(settings)
    parsed = ChatCompletionRequest.model_validate(loads(BODY))
    prompt = chat_prompt(parsed, engine.tokenizer)
    target = Target("llmsim/sim-model", None)
    meta = ResponseMeta("chatcmpl-x", "chat.completion", 0, target.name)

    def generation_request() -> GenerationRequest:
        return GenerationRequest(
            request_id="chatcmpl-x",
            target=target,
            prompts=[prompt],
            max_tokens=64,
            ignore_eos=True,
        )

    async def run_once() -> None:
        with engine.submit(generation_request()) as group:
            await group.run()

    group = engine.submit(generation_request())
    await group.run()

    async def engine_step(n: int) -> float:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(n):
                await run_once()
            best = min(best, (time.perf_counter() - started) / n)
        return best * 1e6

    return [
        ("parse JSON", best_of(rounds, count, lambda: loads(BODY))),
        (
            "validate (pydantic)",
            best_of(rounds, count, lambda: ChatCompletionRequest.model_validate(loads(BODY))),
        ),
        (
            "prompt: template and token count",
            best_of(rounds, count, lambda: chat_prompt(parsed, engine.tokenizer)),
        ),
        ("engine: generate and pace 64 tokens", await engine_step(count)),
        ("answer: build and encode", best_of(rounds, count, lambda: dumps(chat_body(meta, group)))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    rows = asyncio.run(measure(max(1, args.rounds), max(1, args.count)))
    width = max(len(name) for name, _ in rows)
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:7.1f} µs")
    total = sum(micros for name, micros in rows if name != "parse JSON")
    print(f"{'total (validation includes parsing)':<{width}}  {total:7.1f} µs")


if __name__ == "__main__":
    main()
