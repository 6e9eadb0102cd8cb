"""How long each token takes: configured means, Gaussian jitter and the load factor."""

from __future__ import annotations

import random
from dataclasses import dataclass

JITTER_CLAMP = 0.7
"""A jittered sample never strays more than 70% from its mean."""


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """The latency knobs, in seconds."""

    time_to_first_token: float = 0.0
    time_to_first_token_std_dev: float = 0.0
    inter_token_latency: float = 0.0
    inter_token_latency_std_dev: float = 0.0
    time_factor_under_load: float = 1.0


class LatencyModel:
    """Samples per-request and per-token delays.

    The per-request ("constant") model of SPEC §4: TTFT and ITL do not depend on the
    prompt or the batch, only on the load factor. A future iteration-level model only
    has to provide these two methods.
    """

    def __init__(self, profile: LatencyProfile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng

    def first_token_delay(self, load_factor: float) -> float:
        p = self.profile
        return self._sample(p.time_to_first_token, p.time_to_first_token_std_dev) * load_factor

    def inter_token_delay(self, load_factor: float) -> float:
        p = self.profile
        return self._sample(p.inter_token_latency, p.inter_token_latency_std_dev) * load_factor

    def load_factor(self, running: int, max_running: int) -> float:
        """1 with one request running, ``time_factor_under_load`` at full capacity."""
        peak = self.profile.time_factor_under_load
        if peak == 1.0 or max_running <= 1 or running <= 1:
            return 1.0
        share = min(running - 1, max_running - 1) / (max_running - 1)
        return 1.0 + (peak - 1.0) * share

    def _sample(self, mean: float, std_dev: float) -> float:
        if std_dev <= 0.0 or mean <= 0.0:
            return mean
        value = self._rng.gauss(mean, std_dev)
        low, high = mean * (1 - JITTER_CLAMP), mean * (1 + JITTER_CLAMP)
        return low if value < low else high if value > high else value
