"""Summaries of a simulated run in bounded memory: latencies go into log-bucket histograms
(percentiles within 0.1 %), counts and sums are exact, goodput is checked per request."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from llmsim.settings.units import parse_duration
from llmsim.simulation.cluster import Outcome

GROWTH = 1.001
"""Each histogram bucket is 0.1 % wider than the one before."""
_LOG_GROWTH = math.log(GROWTH)
SMALLEST = 1e-7
"""Values below 0.1 µs share the first bucket."""

METRICS = ("ttft", "tpot", "itl", "e2e", "queue")
QUANTILES = (50, 90, 99)
SLO_KEYS = ("ttft", "tpot", "e2e", "queue")


class SLOError(ValueError):
    """An --slo text that cannot be read; the message is one line."""


@dataclass(slots=True)
class Histogram:
    """Counts in buckets growing by :data:`GROWTH`; the mean is exact."""

    buckets: Counter[int] = field(default_factory=Counter)
    count: int = 0
    total: float = 0.0

    def add(self, value: float, count: int = 1) -> None:
        """``count`` occurrences of ``value``."""
        self.count += count
        self.total += value * count
        index = 0 if value <= SMALLEST else 1 + int(math.log(value / SMALLEST) / _LOG_GROWTH)
        self.buckets[index] += count

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The value at ``q`` percent (the middle of its bucket)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                if index == 0:
                    return 0.0
                return float(SMALLEST * GROWTH ** (index - 0.5))
        return 0.0  # not reached: the counts add up to count


@dataclass(frozen=True, slots=True)
class SLO:
    """Upper bounds in seconds; a request meets the SLO when it meets every one."""

    bounds: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> SLO:
        bounds = []
        for item in text.split(","):
            key, sep, value = item.strip().partition("=")
            if not sep or key.strip() not in SLO_KEYS:
                raise SLOError(
                    f"--slo {item.strip()!r}: expected KEY=DURATION with KEY one of "
                    + ", ".join(SLO_KEYS)
                )
            try:
                bounds.append((key.strip(), parse_duration(value.strip())))
            except ValueError as exc:
                raise SLOError(f"--slo {item.strip()!r}: {exc}") from None
        return cls(tuple(bounds))

    def met(self, outcome: Outcome) -> bool:
        for key, bound in self.bounds:
            value = getattr(outcome, key)
            if value is not None and value > bound:
                return False
        return True


@dataclass(slots=True)
class Stats:
    """One instance's (or the whole fleet's) figures."""

    requests: int = 0
    prefills: int = 0
    """Prompts prefilled for a decode instance (P/D prefill instances)."""
    good: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    first_sent: float = math.inf
    last_finished: float = 0.0
    latencies: dict[str, Histogram] = field(
        default_factory=lambda: {name: Histogram() for name in METRICS}
    )
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    peak_kv: float = 0.0
    kv_time: float = 0.0
    """Integral of KV usage over time, for the time-weighted mean."""

    def add(self, outcome: Outcome, good: bool) -> None:
        self.requests += 1
        self.good += good
        self.prompt_tokens += outcome.prompt_tokens
        self.cached_tokens += outcome.cached_tokens
        self.output_tokens += outcome.output_tokens
        self.first_sent = min(self.first_sent, outcome.sent)
        self.last_finished = max(self.last_finished, outcome.finished)
        latencies = self.latencies
        latencies["ttft"].add(outcome.ttft)
        latencies["e2e"].add(outcome.e2e)
        latencies["queue"].add(outcome.queue)
        tpot = outcome.tpot
        if tpot is not None:
            latencies["tpot"].add(tpot)

    def merge(self, other: Stats) -> None:
        for name in ("requests", "prefills", "good", "prompt_tokens", "cached_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("output_tokens", "preemptions", "prefix_queries", "prefix_hits", "kv_time"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_sent = min(self.first_sent, other.first_sent)
        self.last_finished = max(self.last_finished, other.last_finished)
        self.peak_kv = max(self.peak_kv, other.peak_kv)
        for name, histogram in other.latencies.items():
            self.latencies[name].merge(histogram)

    @property
    def duration(self) -> float:
        return max(self.last_finished - self.first_sent, 0.0) if self.requests else 0.0

    def figures(self, duration: float, instances: int = 1) -> dict[str, float | int]:
        """Every figure under a stable key (seconds; rates per second of ``duration``)."""
        per_second = 1.0 / duration if duration > 0 else 0.0
        figures: dict[str, float | int] = {
            "requests": self.requests,
            "prefills": self.prefills,
            "duration_s": duration,
            "request_throughput": self.requests * per_second,
            "output_throughput": self.output_tokens * per_second,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "good_requests": self.good,
            "goodput": self.good * per_second,
            "good_share": self.good / self.requests if self.requests else 0.0,
            "preemptions": self.preemptions,
            "prefix_cache_hit_rate": (
                self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0
            ),
            "peak_kv_usage": self.peak_kv,
            "mean_kv_usage": self.kv_time / (duration * instances) if duration > 0 else 0.0,
        }
        for name, histogram in self.latencies.items():
            figures[f"mean_{name}_s"] = histogram.mean
            for q in QUANTILES:
                figures[f"p{q}_{name}_s"] = histogram.percentile(q)
        return figures
