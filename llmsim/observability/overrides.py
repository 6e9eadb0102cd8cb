"""The fake-metrics spec in force: when it was set, and what it makes the exposition say.

The spec itself (its shape, parsing and time functions) is a setting and lives in
:mod:`llmsim.settings.fake_metrics`; this module checks it against the registry's families
and rewrites them at scrape time (:mod:`llmsim.observability.fake_series`).

Time is counted in whole refresh intervals (``--fake-metrics-refresh-interval``): a scrape
sees every value as it was at the last tick, and counters and histograms are integrated
tick by tick up to it. Nothing runs between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import Metric

from llmsim.observability.fake_catalogue import catalogue, resolve
from llmsim.observability.fake_series import FakeSeries, last_tick
from llmsim.settings.fake_metrics import (
    GAUGE_RANGES,
    FakeMetrics,
    LoraOverride,
    plain_number,
)

Families = Callable[[], Iterable[Metric]]


class MetricOverrides:
    """The spec in force and when it was set: time functions count from that moment."""

    def __init__(
        self,
        clock: Callable[[], float],
        families: Families,
        *,
        refresh_interval: float = 0.1,
        defaults: Mapping[str, str] | None = None,
    ) -> None:
        """``families`` reads the live registry; ``defaults`` are label values (the
        instance's ``model_name`` and ``engine``) an entry need not give."""
        self._clock = clock
        self._families = families
        self._tick = refresh_interval
        self._defaults = dict(defaults or {})
        self._spec: FakeMetrics | None = None
        self._since = 0.0
        self._fakes = FakeSeries()

    @property
    def spec(self) -> FakeMetrics | None:
        return self._spec

    def set(self, spec: FakeMetrics | None) -> None:
        """Replace the whole override (an empty spec or None clears it); restart the clock.

        Counters and histograms go on from the values they show now.
        """
        spec = None if spec is None or spec.is_empty else spec
        targets = [] if spec is None else resolve(spec, catalogue(self._families()), self._defaults)
        self._fakes.check_room(targets)
        now = self._clock()
        if self._spec is not None:
            self._fakes.advance(now - self._since, self._tick, to_the_end=True)
        self._fakes.replace(targets, self._families())
        self._spec, self._since = spec, now

    def elapsed(self) -> float | None:
        """Seconds since the override was set, or None when there is none."""
        return None if self._spec is None else self._clock() - self._since

    def collect(self) -> Iterator[Metric]:
        """The registry's families as a scrape shows them, fakes written in."""
        if self._spec is not None:
            self._fakes.advance(self._clock() - self._since, self._tick)
        return self._fakes.rewrite(self._families())

    def value(self, name: str) -> float | None:
        """The pinned value of scheduler gauge ``name`` now, or None when it is live."""
        spec = self._spec
        if spec is None:
            return None
        return spec.sample(name, last_tick(self._clock() - self._since, self._tick))

    def loras(self) -> LoraOverride | None:
        return None if self._spec is None else self._spec.loras

    def current(self) -> dict[str, Any]:
        """The faked values now (for the admin API): scheduler gauges given by their short
        names as numbers; every other entry as ``{"labels", "value"}`` (a histogram:
        ``{"labels", "count", "sum"}``), a list when a key has several label sets."""
        values = {name: self.value(name) for name in GAUGE_RANGES}
        shown: dict[str, Any] = {
            name: plain_number(value) for name, value in values.items() if value is not None
        }
        if self._spec is None or not self._spec.series:
            return shown
        scrape = {
            (sample.name, tuple(sorted(sample.labels.items()))): plain_number(float(sample.value))
            for family in self.collect()
            for sample in family.samples
        }
        for target in self._fakes.targets:
            if target.spec_key not in self._spec.series:
                continue  # a short gauge key, shown above
            entry = target.shown(scrape)
            if target.spec_key in shown:
                earlier = shown[target.spec_key]
                shown[target.spec_key] = (
                    [*earlier, entry] if isinstance(earlier, list) else [earlier, entry]
                )
            else:
                shown[target.spec_key] = entry
        return shown
