"""Fake values for any ``vllm:`` series: a gauge's value, a counter's rate, a histogram's
observation rate and latency distribution, each a signal (a function of time).

This module only checks the shape of an entry; whether the named series exists and is a
gauge, a counter or a histogram is checked against the metrics registry when the spec is
applied (``llmsim.observability``), since only the registry knows its series.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from llmsim.settings.fake_signals import (
    FUNCTION_NAMES,
    AnySignal,
    Signal,
    Strict,
    spec_error,
)

SeriesKind = Literal["gauge", "counter", "histogram"]
QUANTILE_KEY = re.compile(r"^p(?P<percent>\d{1,2}(?:\.\d+)?)$")
ENTRY_KEYS = frozenset({"labels", "value", "rate", "lognormal", "quantiles", "buckets"})
DISTRIBUTIONS = ("lognormal", "quantiles", "buckets")
MAX_ENTRIES = 1000
"""At most this many label sets in one spec: every entry keeps a series alive."""


def quantile_of(key: str) -> float:
    """``"p90"`` → 0.9; the key must name a percentile strictly between 0 and 100."""
    match = QUANTILE_KEY.match(key)
    percent = float(match["percent"]) if match is not None else 0.0
    if not 0.0 < percent < 100.0:
        raise spec_error(f"quantile keys are p1 to p99.9 (for example p50, p90, p99), not {key!r}")
    return percent / 100.0


def _low(signal: AnySignal) -> float:
    return min(signal.bounds())


class LogNormal(Strict):
    """A log-normal latency given by its median and 99th percentile."""

    p50: Signal
    p99: Signal

    @model_validator(mode="after")
    def _positive_and_ordered(self) -> LogNormal:
        if _low(self.p50) <= 0 or _low(self.p99) <= 0:
            raise spec_error("p50 and p99 must be greater than 0")
        if self.p99.at(0.0) < self.p50.at(0.0):
            raise spec_error("p99 must not be below p50")
        return self

    def describe(self) -> Any:
        return {"p50": self.p50.describe(), "p99": self.p99.describe()}


class SeriesFake(Strict):
    """One label set of one series: ``value`` for a gauge, ``rate`` (per second) for a
    counter, ``rate`` and one distribution for a histogram."""

    labels: dict[str, str] = Field(default_factory=dict)
    value: Signal | None = None
    rate: Signal | None = None
    lognormal: LogNormal | None = None
    quantiles: dict[str, Signal] | None = None
    buckets: dict[str, Signal] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SeriesFake:
        if (self.value is None) == (self.rate is None):
            raise spec_error(
                'give "value" (a gauge) or "rate" (per second, a counter or histogram)'
            )
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if self.value is not None and given:
            raise spec_error(f'"{given[0]}" needs a "rate", not a "value"')
        if len(given) > 1:
            raise spec_error(f"give one distribution, not {' and '.join(given)}")
        if self.rate is not None and _low(self.rate) < 0:
            raise spec_error("rate must not be negative")
        self._check_quantiles()
        if self.buckets is not None:
            if not self.buckets:
                raise spec_error("buckets must name at least one bucket bound")
            if any(_low(share) < 0 for share in self.buckets.values()):
                raise spec_error("bucket shares must not be negative")
        return self

    def _check_quantiles(self) -> None:
        if self.quantiles is None:
            return
        if not self.quantiles:
            raise spec_error("quantiles must name at least one, for example p90")
        for key, signal in self.quantiles.items():
            quantile_of(key)
            if _low(signal) <= 0:
                raise spec_error(f"quantile {key} must be greater than 0")
        ordered = sorted(self.quantiles.items(), key=lambda item: quantile_of(item[0]))
        values = [signal.at(0.0) for _, signal in ordered]
        if any(later <= earlier for earlier, later in itertools.pairwise(values)):
            raise spec_error("quantile values must grow with the quantile (p50 < p90 < ...)")

    @property
    def kind(self) -> SeriesKind:
        """The series type this entry can fake."""
        if self.value is not None:
            return "gauge"
        return "counter" if self.distribution is None else "histogram"

    @property
    def distribution(self) -> str | None:
        return next((name for name in DISTRIBUTIONS if getattr(self, name) is not None), None)

    def describe(self) -> Any:
        if self.value is not None and not self.labels:
            return self.value.describe()
        described: dict[str, Any] = {}
        if self.labels:
            described["labels"] = dict(self.labels)
        if self.value is not None:
            described["value"] = self.value.describe()
        if self.rate is not None:
            described["rate"] = self.rate.describe()
        if self.lognormal is not None:
            described["lognormal"] = self.lognormal.describe()
        for name in ("quantiles", "buckets"):
            table: dict[str, AnySignal] | None = getattr(self, name)
            if table is not None:
                described[name] = {key: signal.describe() for key, signal in table.items()}
        return described


def entries_form(value: Any) -> Any:
    """A key's value as a list of entries: a bare number or time function is a gauge value."""
    if isinstance(value, list):
        return value
    is_function = isinstance(value, Mapping) and len(value) == 1
    if is_function and not (ENTRY_KEYS & set(value)) and next(iter(value)) in FUNCTION_NAMES:
        return [{"value": value}]
    if isinstance(value, (Mapping, SeriesFake)):
        return [value]
    return [{"value": value}]


def describe_entries(entries: tuple[SeriesFake, ...]) -> Any:
    described = [entry.describe() for entry in entries]
    return described[0] if len(described) == 1 else described
