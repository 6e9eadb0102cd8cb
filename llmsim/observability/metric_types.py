"""Counters and histograms cheap enough to update for every simulated token.

prometheus-client's own types take a lock and validate on every update, which costs more
than the rest of a token's work. The engine runs on one event-loop thread and /metrics is
rendered on that same thread, so plain integers and lists are safe here. Families are
handed to prometheus-client at scrape time, which keeps the exposition format (names,
``_total``/``_created`` samples, ``le`` labels) exactly as its own types write it.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


def created_series_enabled() -> bool:
    """prometheus-client's own switch for the ``_created`` samples, honoured here too."""
    flag = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return flag.lower() not in ("true", "1", "t")


def le_text(bound: float) -> str:
    """The ``le`` label text prometheus-client writes for a bucket bound."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class FastCounter:
    """A monotonically increasing total of one label set."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class FastHistogram:
    """Bucket counts of one label set; ``le`` bounds are inclusive, as Prometheus wants."""

    __slots__ = ("_bounds", "_index", "_les", "counts", "created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(float(bound) for bound in bounds)
        self._index = partial(bisect_left, self._bounds)
        self._les = tuple(le_text(bound) for bound in (*self._bounds, float("inf")))
        self.counts = [0] * (len(self._bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def observe_repeated(self, value: float, times: int) -> None:
        self.counts[bisect_left(self._bounds, value)] += times
        self.sum += value * times

    def observe_all(self, values: Sequence[float]) -> None:
        """Every value in ``values``, counted in C rather than a call each."""
        if not values:
            return
        counts = self.counts
        for index, count in Counter(map(self._index, values)).items():
            counts[index] += count
        self.sum += sum(values)

    def cumulative(self) -> list[tuple[str, float]]:
        buckets = []
        running = 0
        for le, count in zip(self._les, self.counts, strict=True):
            running += count
            buckets.append((le, float(running)))
        return buckets


class DerivedCounter:
    """A counter read at scrape time as a total minus parts: one update fewer per event."""

    __slots__ = ("_parts", "_total", "created")

    def __init__(self, total: FastCounter, *parts: FastCounter) -> None:
        self._total = total
        self._parts = parts
        self.created = total.created

    @property
    def value(self) -> float:
        return self._total.value - sum(part.value for part in self._parts)


class DerivedHistogram:
    """Another histogram's observations with a few of them changed: when nearly every
    observation would be the same value in both, only the exceptions cost an update."""

    __slots__ = ("_base", "changes", "created")

    def __init__(self, base: FastHistogram, bounds: Sequence[float]) -> None:
        self._base = base
        self.changes = FastHistogram(bounds)
        self.created = base.created

    def replace(self, old: float, new: float | None) -> None:
        """One of the base's observations, ``old``, is ``new`` here (None: left out)."""
        self.changes.observe_repeated(old, -1)
        if new is not None:
            self.changes.observe(new)

    def add(self, value: float) -> None:
        """An observation of this histogram alone."""
        self.changes.observe(value)

    @property
    def sum(self) -> float:
        return self._base.sum + self.changes.sum

    def cumulative(self) -> list[tuple[str, float]]:
        changes = self.changes.cumulative()
        return [
            (le, count + change)
            for (le, count), (_, change) in zip(self._base.cumulative(), changes, strict=True)
        ]


class ZerosOf(DerivedHistogram):
    """0 for each of another histogram's observations but a few: a count that is nearly
    always 0 (a request's preemptions) costs an update only when it is not."""

    __slots__ = ()

    def replace_zero(self, value: float) -> None:
        self.replace(0.0, value)

    @property
    def sum(self) -> float:
        return self.changes.sum

    def cumulative(self) -> list[tuple[str, float]]:
        zeros = sum(self._base.counts)  # 0 is below every bound: in every bucket
        return [(le, zeros + change) for le, change in self.changes.cumulative()]


Counters = FastCounter | DerivedCounter
Histograms = FastHistogram | DerivedHistogram


class FastFamily:
    """A named counter or histogram with its label sets, exported at scrape time."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label_names: Sequence[str],
        buckets: Sequence[float] | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(label_names)
        self.buckets = None if buckets is None else tuple(buckets)
        self._children: dict[tuple[str, ...], Counters | Histograms] = {}
        self._created = created_series_enabled()

    def counter(self, *labels: str) -> FastCounter:
        assert self.buckets is None, f"{self.name} is a histogram"
        child = self._children.setdefault(labels, FastCounter())
        assert isinstance(child, FastCounter)
        return child

    def histogram(self, *labels: str) -> FastHistogram:
        assert self.buckets is not None, f"{self.name} is a counter"
        child = self._children.setdefault(labels, FastHistogram(self.buckets))
        assert isinstance(child, FastHistogram)
        return child

    def derive(self, child: DerivedCounter | DerivedHistogram, *labels: str) -> None:
        """Export ``child`` as the series of these label values."""
        assert (self.buckets is None) == isinstance(child, DerivedCounter), self.name
        self._children[labels] = child

    def metric(self) -> Metric:
        if self.buckets is None:
            counters = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
            for labels, child in self._children.items():
                assert isinstance(child, FastCounter | DerivedCounter)
                counters.add_metric(list(labels), child.value, created=self._when(child.created))
            return counters
        histograms = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        for labels, child in self._children.items():
            assert isinstance(child, FastHistogram | DerivedHistogram)
            histograms.add_metric(list(labels), child.cumulative(), child.sum)
            if self._created:
                label_map = dict(zip(self.label_names, labels, strict=True))
                histograms.samples.append(Sample(f"{self.name}_created", label_map, child.created))
        return histograms

    def _when(self, created: float) -> float | None:
        return created if self._created else None


class FastCollector(Collector):
    """Registers a set of :class:`FastFamily` objects with a prometheus-client registry."""

    def __init__(self) -> None:
        self._families: list[FastFamily] = []
        self.before: list[Callable[[], None]] = []
        """Called before every collection: observations kept aside are folded in."""

    def add(self, family: FastFamily) -> FastFamily:
        self._families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        for fold in self.before:
            fold()
        for family in self._families:
            yield family.metric()
