"""The fake-metrics spec in force, asked for a pinned value at scrape time.

The spec itself (its shape, parsing and time functions) is a setting and lives in
:mod:`llmsim.settings.fake_metrics`; this module only remembers which spec is set and since when.
"""

from __future__ import annotations

from collections.abc import Callable

from llmsim.settings.fake_metrics import GAUGE_RANGES, FakeMetrics, LoraOverride, plain_number


class MetricOverrides:
    """The spec in force and when it was set: time functions count from that moment."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._spec: FakeMetrics | None = None
        self._since = 0.0

    @property
    def spec(self) -> FakeMetrics | None:
        return self._spec

    def set(self, spec: FakeMetrics | None) -> None:
        """Replace the whole override (an empty spec or None clears it); restart the clock."""
        self._spec = None if spec is None or spec.is_empty else spec
        self._since = self._clock()

    def elapsed(self) -> float | None:
        """Seconds since the override was set, or None when there is none."""
        return None if self._spec is None else self._clock() - self._since

    def value(self, name: str) -> float | None:
        """The pinned value of gauge ``name`` now, or None to use the live one."""
        spec = self._spec
        if spec is None:
            return None
        return spec.sample(name, self._clock() - self._since)

    def loras(self) -> LoraOverride | None:
        return None if self._spec is None else self._spec.loras

    def current(self) -> dict[str, float | int]:
        """The pinned gauge values now (for the admin API)."""
        values = {name: self.value(name) for name in GAUGE_RANGES}
        return {name: plain_number(value) for name, value in values.items() if value is not None}
