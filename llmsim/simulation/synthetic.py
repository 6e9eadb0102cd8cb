"""Synthetic workloads: lengths from distributions, Poisson or gamma arrivals, shared system
prompts and multi-turn conversations, drawn lazily so a long run holds no list of requests."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from llmsim.simulation.workload import Request


class WorkloadError(ValueError):
    """A workload description that cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class Lengths:
    """Token counts: ``fixed:N`` (or ``N``), ``uniform:LOW:HIGH``, ``normal:MEAN:STD`` or
    ``exponential:MEAN``; every draw is at least 1."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str, name: str) -> Lengths:
        kind, _, rest = text.strip().partition(":")
        if not rest and kind.replace(".", "", 1).isdigit():
            kind, rest = "fixed", kind
        try:
            numbers = [float(part) for part in rest.split(":")] if rest else []
        except ValueError:
            raise WorkloadError(f"{name} {text!r}: expected numbers after {kind}:") from None
        arity = {"fixed": 1, "uniform": 2, "normal": 2, "exponential": 1}.get(kind)
        if arity is None:
            raise WorkloadError(
                f"{name} {text!r}: expected N, uniform:LOW:HIGH, normal:MEAN:STD or exponential:MEAN"
            )
        if len(numbers) != arity or any(not math.isfinite(n) or n < 0 for n in numbers):
            raise WorkloadError(f"{name} {text!r}: {kind} takes {arity} non-negative number(s)")
        if kind == "uniform" and numbers[0] > numbers[1]:
            raise WorkloadError(f"{name} {text!r}: LOW is above HIGH")
        return cls(kind, *numbers)

    def draw(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        elif self.kind == "normal":
            value = rng.gauss(self.a, self.b)
        else:
            value = rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        return max(1, round(value))


def send_times(rate: float, burstiness: float, rng: random.Random) -> Iterator[float]:
    """Endless send times from 0 with gamma gaps of mean ``1 / rate`` (Poisson at
    ``burstiness`` 1, burstier below 1); an infinite rate sends everything at 0."""
    now = 0.0
    while True:
        yield now
        if rate != math.inf:
            now += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))


def check_arrivals(
    rate: float, burstiness: float, count: int | None, duration: float | None
) -> None:
    """Refuse arrivals that make no sense or never end, with a one-line reason."""
    if not rate > 0:
        raise WorkloadError(f"--rate {rate:g}: must be above 0 (inf sends everything at once)")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise WorkloadError(f"--burstiness {burstiness:g}: must be a finite number above 0")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise WorkloadError(f"--duration {duration:g}: must be a finite number of seconds above 0")
    if count is None and (duration is None or rate == math.inf):
        raise WorkloadError("give --num-requests (or --duration with a finite --rate)")


def limited(times: Iterator[float], count: int | None, duration: float | None) -> Iterator[float]:
    """The first ``count`` times before ``duration`` (either may be None, not both)."""
    for number, at in enumerate(times):
        if (count is not None and number >= count) or (duration is not None and at >= duration):
            return
        yield at


@dataclass(frozen=True, slots=True)
class Synthetic:
    """What to send: ``rate`` requests (conversations) per second until ``count`` of them or
    ``duration`` seconds, whichever comes first."""

    rate: float
    input_len: Lengths
    output_len: Lengths
    count: int | None = None
    duration: float | None = None
    burstiness: float = 1.0
    num_prefixes: int = 0
    prefix_len: int = 0
    turns: int = 1
    think_time: float = 0.0
    adapters: tuple[str, ...] = ()
    """LoRA adapters: each conversation names one, at random."""

    def requests(self, seed: int) -> Iterator[Request]:
        """The requests in the order they are sent (follow-up turns hang off the first)."""
        check_arrivals(self.rate, self.burstiness, self.count, self.duration)
        return self._requests(random.Random(seed))

    def _requests(self, rng: random.Random) -> Iterator[Request]:
        times = limited(send_times(self.rate, self.burstiness, rng), self.count, self.duration)
        for number, at in enumerate(times):
            yield self._conversation(number, at, rng)

    def _conversation(self, number: int, at: float, rng: random.Random) -> Request:
        prefix = f"system-{rng.randrange(self.num_prefixes)}" if self.num_prefixes else ""
        prefix_tokens = self.prefix_len if prefix else 0
        name = f"conversation-{number}"
        turns: list[tuple[int, int]] = []
        context = prefix_tokens
        for _ in range(self.turns):
            context += self.input_len.draw(rng)
            output = self.output_len.draw(rng)
            turns.append((context, output))
            context += output
        adapter = rng.choice(self.adapters) if self.adapters else None
        request: Request | None = None
        for turn, (tokens, output) in reversed(list(enumerate(turns))):
            send_at = at if turn == 0 else self.think_time
            request = Request(
                name, tokens, output, send_at, prefix, prefix_tokens, request, adapter
            )
        assert request is not None
        return request
