"""Fake values written into any ``vllm:`` family at scrape time, without going backwards.

The registry's families are read as they are and the faked label sets rewritten
(:mod:`llmsim.observability.fake_catalogue` matches a spec to them):

- a gauge reports the entry's value at the last refresh tick;
- a counter or a histogram integrates the entry's rate (and spreads it over the buckets)
  from tick to tick, starting from the value it showed when the spec was set. When the spec
  is replaced or cleared, the series keeps the value it reached and live increments add on
  top of it, so ``rate()`` never sees a reset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from llmsim.observability.fake_catalogue import SeriesKey, Target, bounds_of, label_names_of
from llmsim.observability.fake_shapes import Shares, parameters, shares_for
from llmsim.observability.metric_types import created_series_enabled, le_text
from llmsim.settings.fake_metrics import COUNT_GAUGES, FakeMetricsError

MAX_STEPS = 2000
"""At most this many integration steps per scrape, however long since the last one."""
MAX_SHAPES = 32
"""At most this many evaluations of a histogram's distribution per scrape."""
MAX_TRACKED = 10_000
"""At most this many counter and histogram label sets faked over a server's life."""


@dataclass
class Track:
    """A series that is or was faked: its offset over the live value, or its faked value.

    Vectors hold one value for a counter; for a histogram the count of each bucket (not
    cumulative, ``+Inf`` last) and then the sum.
    """

    offset: list[float]
    faked: list[float] | None = None
    created: float = field(default_factory=time.time)


class FakeSeries:
    """The faked series of the spec in force and of earlier ones, rewritten at scrape time."""

    def __init__(self) -> None:
        self.targets: list[Target] = []
        self.tracks: dict[SeriesKey, Track] = {}
        self._advanced_to = 0.0
        self._created = created_series_enabled()
        self._shapes: dict[SeriesKey, tuple[tuple[float, ...], Shares | None]] = {}

    def check_room(self, targets: list[Target]) -> None:
        """Refuse a spec that would keep more than :data:`MAX_TRACKED` series alive: a
        faked counter or histogram stays in the exposition for good."""
        new = {target.key for target in targets if target.info.kind != "gauge"} - set(self.tracks)
        if len(self.tracks) + len(new) > MAX_TRACKED:
            raise FakeMetricsError(
                f"at most {MAX_TRACKED} counter and histogram label sets can be faked over a "
                f"server's life; {len(self.tracks)} are in use"
            )

    def replace(self, targets: list[Target], live: Iterable[Metric]) -> None:
        """Start ``targets`` from the values shown now; series no longer faked keep theirs.

        The caller advances the old spec to this moment first.
        """
        values = _live_values(live, set(self.tracks) | {t.key for t in targets})
        wanted = {target.key: target for target in targets if target.info.kind != "gauge"}
        for key, track in self.tracks.items():
            if track.faked is not None and key not in wanted:
                live_now = values.get(key) or [0.0] * len(track.faked)
                track.offset = [f - v for f, v in zip(track.faked, live_now, strict=True)]
                track.faked = None
        for key, target in wanted.items():
            width = 1 if target.info.kind == "counter" else len(target.info.bounds) + 2
            live_now = values.get(key) or [0.0] * width
            track = self.tracks.setdefault(key, Track([0.0] * width))
            if track.faked is None:
                track.faked = [v + o for v, o in zip(live_now, track.offset, strict=True)]
        self.targets = targets
        self._advanced_to = 0.0
        self._shapes.clear()

    def advance(self, elapsed: float, tick: float, *, to_the_end: bool = False) -> None:
        """Integrate the rates up to the last whole ``tick`` before ``elapsed`` (or up to
        ``elapsed`` itself when the spec is being replaced).

        Rates are sampled once per tick; a histogram's distribution at most
        :data:`MAX_SHAPES` times per call (in the middle of equal runs of ticks), which
        bounds the work of a scrape however long since the last one.
        """
        until = elapsed if to_the_end else last_tick(elapsed, tick)
        span = until - self._advanced_to
        if span <= 0 or not self.targets:
            self._advanced_to = max(self._advanced_to, until)
            return
        steps = min(max(round(span / tick), 1), MAX_STEPS)
        width = span / steps
        runs = min(steps, MAX_SHAPES)
        for run in range(runs):
            first, last = run * steps // runs, (run + 1) * steps // runs
            begin = self._advanced_to + first * width
            middle = self._advanced_to + (first + last) / 2 * width
            for target in self.targets:
                if target.info.kind != "gauge":
                    rate = target.entry.rate
                    assert rate is not None
                    count = sum(
                        max(rate.at(begin + (step + 0.5) * width), 0.0)
                        for step in range(last - first)
                    )
                    self._add(target, count * width, middle)
        self._advanced_to = until

    def _add(self, target: Target, count: float, at: float) -> None:
        """Add ``count`` observations made around ``at`` to the target's series."""
        track = self.tracks[target.key]
        assert track.faked is not None
        if count <= 0:
            return
        if target.info.kind == "counter":
            track.faked[0] += count
            return
        spread = self._spread(target, at)
        if spread is None:
            return
        shares, mean = spread
        for index, share in enumerate(shares):
            track.faked[index] += count * share
        track.faked[-1] += count * mean

    def _spread(self, target: Target, at: float) -> Shares | None:
        """The target's bucket shares at ``at``, reused while its parameters hold still."""
        params = parameters(target.entry, at)
        cached = self._shapes.get(target.key)
        if cached is not None and cached[0] == params:
            return cached[1]
        spread = shares_for(target.entry, params, target.info.bounds)
        self._shapes[target.key] = (params, spread)
        return spread

    def gauge_value(self, target: Target) -> float:
        assert target.entry.value is not None
        value = target.entry.value.at(self._advanced_to)
        return float(round(value)) if target.info.name in COUNT_GAUGES else value

    # -- exposition ------------------------------------------------------------------
    def rewrite(self, families: Iterable[Metric]) -> Iterator[Metric]:
        """The registry's families with the faked series written in."""
        gauges = {t.key: t for t in self.targets if t.info.kind == "gauge"}
        touched = {key[0] for key in self.tracks} | {key[0] for key in gauges}
        for family in families:
            if family.name in touched:
                yield self._rewritten(family, gauges)
            else:
                yield family

    def _rewritten(self, family: Metric, gauges: Mapping[SeriesKey, Target]) -> Metric:
        out = Metric(family.name, family.documentation, family.type, family.unit)
        label_names = label_names_of(family)
        if family.type in ("counter", "histogram"):
            live = _vectors(family, label_names)
            keys = list(live) + [
                key[1] for key in self.tracks if key[0] == family.name and key[1] not in live
            ]
            for values in keys:
                out.samples.extend(self._series_samples(family, label_names, values, live))
            return out
        seen: set[tuple[str, ...]] = set()
        for sample in family.samples:
            values = tuple(sample.labels.get(name, "") for name in label_names)
            seen.add(values)
            target = gauges.get((family.name, values))
            value = sample.value if target is None else self.gauge_value(target)
            out.samples.append(sample._replace(value=value))
        for (name, values), target in gauges.items():
            if name == family.name and values not in seen:
                labels = dict(zip(label_names or target.info.label_names, values, strict=False))
                out.samples.append(Sample(family.name, labels, self.gauge_value(target)))
        return out

    def _series_samples(
        self,
        family: Metric,
        label_names: tuple[str, ...],
        values: tuple[str, ...],
        live: Mapping[tuple[str, ...], tuple[list[float], list[Sample]]],
    ) -> list[Sample]:
        vector, samples = live.get(values, ([], []))
        track = self.tracks.get((family.name, values))
        if track is None:
            return samples
        shown = (
            track.faked
            if track.faked is not None
            else [
                v + o
                for v, o in zip(vector or [0.0] * len(track.offset), track.offset, strict=True)
            ]
        )
        labels = dict(zip(label_names, values, strict=True))
        created = [s for s in samples if s.name.endswith("_created")]
        if not created and self._created:
            created = [Sample(f"{family.name}_created", labels, track.created)]
        if family.type == "counter":
            return [Sample(f"{family.name}_total", labels, _whole(shown[0])), *created]
        bounds = bounds_of(family) or []
        rows: list[Sample] = []
        running = 0.0
        for bound, count in zip((*bounds, math.inf), shown[:-1], strict=True):
            running += count
            le = {**labels, "le": le_text(bound)}
            rows.append(Sample(f"{family.name}_bucket", le, _whole(running)))
        rows.append(Sample(f"{family.name}_count", labels, _whole(running)))
        rows.append(Sample(f"{family.name}_sum", labels, shown[-1]))
        return [*rows, *created]


def last_tick(elapsed: float, tick: float) -> float:
    """The start of the refresh interval ``elapsed`` falls in."""
    return math.floor(elapsed / tick + 1e-9) * tick


def _whole(count: float) -> float:
    """Observations are whole: a count shows the ones completed (rounding noise aside)."""
    return float(math.floor(count + 1e-6))


def _vectors(
    family: Metric, label_names: tuple[str, ...]
) -> dict[tuple[str, ...], tuple[list[float], list[Sample]]]:
    """Each live series of a counter or histogram family as a vector, with its samples."""
    grouped: dict[tuple[str, ...], list[Sample]] = {}
    for sample in family.samples:
        values = tuple(sample.labels.get(name, "") for name in label_names)
        grouped.setdefault(values, []).append(sample)
    vectors = {}
    for values, samples in grouped.items():
        if family.type == "counter":
            totals = [s.value for s in samples if s.name.endswith("_total")]
            vectors[values] = ([totals[0] if totals else 0.0], samples)
            continue
        buckets = sorted(
            (float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")
        )
        counts, below = [], 0.0
        for _, cumulative in buckets:
            counts.append(cumulative - below)
            below = cumulative
        sums = [s.value for s in samples if s.name.endswith("_sum")]
        vectors[values] = ([*counts, sums[0] if sums else 0.0], samples)
    return vectors


def _live_values(families: Iterable[Metric], keys: set[SeriesKey]) -> dict[SeriesKey, list[float]]:
    names = {name for name, _ in keys}
    found: dict[SeriesKey, list[float]] = {}
    for family in families:
        if family.name in names and family.type in ("counter", "histogram"):
            for values, (vector, _) in _vectors(family, label_names_of(family)).items():
                found[(family.name, values)] = vector
    return found
