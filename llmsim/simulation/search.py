"""Questions answered with several runs: a grid over one value, the highest rate that meets
an SLO, the fewest replicas that do."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from llmsim.simulation.run import Result

MAX_POINTS = 200
"""A sweep of more points than this is refused (a typo in the grid, not a wish)."""
BISECTION_STEPS = 10
MAX_REPLICAS = 1024


class SearchError(ValueError):
    """A sweep or search that cannot run; the message is one line."""


@dataclass(frozen=True, slots=True)
class Grid:
    """``NAME=START:STOP:xFACTOR`` (geometric) or ``NAME=START:STOP:STEP`` (linear)."""

    name: str
    values: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> Grid:
        name, sep, spec = text.partition("=")
        parts = spec.split(":")
        if not sep or not name.strip() or len(parts) != 3:
            raise SearchError(f"--sweep {text!r}: expected NAME=START:STOP:xFACTOR or :STEP")
        try:
            start, stop = float(parts[0]), float(parts[1])
            geometric = parts[2].startswith("x")
            step = float(parts[2][1:] if geometric else parts[2].lstrip("+"))
        except ValueError:
            raise SearchError(f"--sweep {text!r}: START, STOP and the step are numbers") from None
        if not all(math.isfinite(v) for v in (start, stop, step)) or start > stop:
            raise SearchError(f"--sweep {text!r}: needs finite START <= STOP")
        if (geometric and (step <= 1 or start <= 0)) or (not geometric and step <= 0):
            raise SearchError(f"--sweep {text!r}: the grid must grow (x above 1, step above 0)")
        values: list[float] = []
        value = start
        while value <= stop * (1 + 1e-9):
            values.append(value)
            if len(values) > MAX_POINTS:
                raise SearchError(f"--sweep {text!r}: more than {MAX_POINTS} points")
            value = value * step if geometric else value + step
        return cls(name.strip().replace("-", "_"), tuple(values))


def max_rate(
    run: Callable[[float], Result], meets: Callable[[Result], bool], start: float = 1.0
) -> tuple[float, Result | None]:
    """The highest rate that meets the SLO: double until one fails, then bisect. (0, None)
    when even ``start`` fails."""
    low, low_result, high = 0.0, None, start
    while True:
        result = run(high)
        if not meets(result):
            break
        low, low_result, high = high, result, high * 2
        if high > 1e6:
            return low, low_result
    if low_result is None:
        return 0.0, None
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        result = run(middle)
        if meets(result):
            low, low_result = middle, result
        else:
            high = middle
    return low, low_result


def fewest_replicas(
    run: Callable[[int], Result], meets: Callable[[Result], bool]
) -> tuple[int, Result]:
    """The fewest replicas that meet the SLO: double until one passes, then bisect."""
    high, result = 1, run(1)
    while not meets(result):
        if high >= MAX_REPLICAS:
            raise SearchError(f"even {MAX_REPLICAS} replicas do not meet the SLO")
        high *= 2
        result = run(high)
    low = high // 2  # fails (or 0)
    best = result
    while high - low > 1:
        middle = (low + high) // 2
        candidate = run(middle)
        if meets(candidate):
            high, best = middle, candidate
        else:
            low = middle
    return high, best
