"""Summary statistics of a run, computed the way vLLM's serving benchmark computes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from llmsim.simulation.driver import RequestRecord


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """Seconds, as vLLM's benchmark reports them (it prints milliseconds)."""

    completed: int
    duration: float
    median_ttft: float
    p99_ttft: float
    median_tpot: float
    p99_tpot: float

    def as_ms(self) -> dict[str, float]:
        """The figures under the keys of vLLM's result files."""
        return {
            "median_ttft_ms": self.median_ttft * 1000.0,
            "p99_ttft_ms": self.p99_ttft * 1000.0,
            "median_tpot_ms": self.median_tpot * 1000.0,
            "p99_tpot_ms": self.p99_tpot * 1000.0,
        }


def summarize(records: Sequence[RequestRecord]) -> Summary:
    """TTFT over every request; TPOT over requests with more than one output token."""
    ttfts = [record.ttft for record in records]
    tpots = [record.tpot for record in records if record.tpot is not None]
    start = min((record.sent for record in records), default=0.0)
    end = max((record.finished for record in records), default=0.0)
    return Summary(
        completed=len(records),
        duration=end - start,
        median_ttft=median(ttfts) if ttfts else 0.0,
        p99_ttft=percentile(ttfts, 99),
        median_tpot=median(tpots) if tpots else 0.0,
        p99_tpot=percentile(tpots, 99),
    )
