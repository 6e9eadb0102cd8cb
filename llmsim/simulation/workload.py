"""What a client sends: requests with prompt and output lengths, and when it sends them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a workload.

    ``prompt`` names the prompt's content: two requests with the same ``prompt`` and length
    share their token ids, so the second finds the first's blocks in the prefix cache.
    """

    prompt: str
    prompt_tokens: int
    output_tokens: int
    send_at: float = 0.0
    """Seconds after the workload starts (for a follow-up turn: after the turn before ends)."""
    prefix: str = ""
    """Names the first ``prefix_tokens`` tokens (a shared system prompt): requests with the
    same prefix share those token ids whatever their ``prompt``."""
    prefix_tokens: int = 0
    then: Request | None = None
    """The conversation's next turn, sent ``then.send_at`` seconds after this one ends."""
    adapter: str | None = None
    """The LoRA adapter the request names (it goes to an instance serving it)."""


def poisson_send_times(
    count: int, rate: float, *, burstiness: float = 1.0, seed: int = 0
) -> list[float]:
    """Send times as vLLM's serving benchmark draws them: the first request at 0, then gaps
    drawn from a gamma distribution of mean ``1 / rate`` (exponential, i.e. Poisson arrivals,
    at ``burstiness`` 1). An infinite rate sends everything at once."""
    if rate == float("inf") or count == 0:
        return [0.0] * count
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)
    times, now = [], 0.0
    for _ in range(count):
        times.append(now)
        now += rng.gammavariate(burstiness, theta)
    return times


def requests_at(
    input_lens: Sequence[int],
    output_lens: Sequence[int],
    send_times: Sequence[float],
    *,
    prompt_names: Sequence[str] | None = None,
) -> list[Request]:
    """Requests from parallel lists (prompt ``k`` is named ``prompt-k`` unless named)."""
    names = prompt_names or [f"prompt-{k}" for k in range(len(input_lens))]
    return [
        Request(name, prompt, max(output, 1), at)
        for name, prompt, output, at in zip(names, input_lens, output_lens, send_times, strict=True)
    ]
