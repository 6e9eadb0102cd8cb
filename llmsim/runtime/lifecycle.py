"""Readiness of the simulated server: loading, ready, draining.

Readiness is derived from the clock and a draining flag rather than from timers, so
there is nothing to schedule or cancel.
"""

from __future__ import annotations

import time
from typing import Literal

Phase = Literal["loading", "ready", "draining"]


class Lifecycle:
    def __init__(self, startup_duration: float) -> None:
        self._ready_at = time.monotonic() + startup_duration
        self._draining = False

    @property
    def phase(self) -> Phase:
        if self._draining:
            return "draining"
        return "ready" if time.monotonic() >= self._ready_at else "loading"

    @property
    def seconds_to_ready(self) -> float:
        """How long the simulated model still loads (0 once loaded)."""
        return max(0.0, self._ready_at - time.monotonic())

    def begin_drain(self) -> None:
        self._draining = True
