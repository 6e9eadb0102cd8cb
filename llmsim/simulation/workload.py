"""What a client sends: requests with prompt and output lengths, and when it sends them."""

from __future__ import annotations

import math
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
    at ``burstiness`` 1). An infinite rate sends everything at once.

    The gaps are the very ones the benchmark draws with ``--seed`` (``np.random.seed`` then
    ``np.random.gamma`` per request), so a published run is replayed with its own arrivals.
    """
    if rate == float("inf") or count == 0:
        return [0.0] * count
    draws = LegacyGamma(seed)
    theta = 1.0 / (rate * burstiness)
    times, now = [], 0.0
    for _ in range(count):
        times.append(now)
        now += theta * draws.standard_gamma(burstiness)
    return times


class LegacyGamma:
    """NumPy's legacy ``RandomState(seed).standard_gamma``, in pure Python: the same
    Mersenne Twister (seeded as ``init_genrand``), the same 53-bit doubles and the same
    rejection samplers, hence the same numbers."""

    __slots__ = ("_gauss", "_rng")

    def __init__(self, seed: int) -> None:
        state = [seed & 0xFFFFFFFF]
        for k in range(1, 624):
            last = state[-1]
            state.append((1812433253 * (last ^ (last >> 30)) + k) & 0xFFFFFFFF)
        self._rng = random.Random()
        self._rng.setstate((3, (*state, 624), None))
        self._gauss: float | None = None

    def _exponential(self) -> float:
        return -math.log(1.0 - self._rng.random())

    def _normal(self) -> float:
        if self._gauss is not None:
            value, self._gauss = self._gauss, None
            return value
        while True:
            x1 = 2.0 * self._rng.random() - 1.0
            x2 = 2.0 * self._rng.random() - 1.0
            r2 = x1 * x1 + x2 * x2
            if 0.0 < r2 < 1.0:
                break
        f = math.sqrt(-2.0 * math.log(r2) / r2)
        self._gauss = f * x1
        return f * x2

    def standard_gamma(self, shape: float) -> float:
        if shape == 1.0:
            return self._exponential()
        if shape < 1.0:
            return self._small_shape(shape)
        b = shape - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * b)
        while True:
            x = self._normal()
            v = 1.0 + c * x
            while v <= 0.0:
                x = self._normal()
                v = 1.0 + c * x
            v = v * v * v
            u = self._rng.random()
            if u < 1.0 - 0.0331 * (x * x) * (x * x):
                return b * v
            if math.log(u) < 0.5 * x * x + b * (1.0 - v + math.log(v)):
                return b * v

    def _small_shape(self, shape: float) -> float:
        while True:
            u = self._rng.random()
            v = self._exponential()
            if u <= 1.0 - shape:
                x = math.pow(u, 1.0 / shape)
                if x <= v:
                    return x
            else:
                y = -math.log((1.0 - u) / shape)
                x = math.pow(1.0 - shape + shape * y, 1.0 / shape)
                if x <= v + y:
                    return x


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
