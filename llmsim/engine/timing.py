"""How long each token takes: configured means, Gaussian jitter and the load factor."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llmsim.settings.model import Settings

JITTER_CLAMP = 0.7
"""A jittered sample never strays more than 70% from its mean."""

LatencyModelName = Literal["constant", "per-token", "step"]


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """The latency knobs, in seconds.

    ``constant`` (SPEC §4, the default): every request waits ``time_to_first_token``.
    ``per-token``: the wait is ``frontend_latency + inter_token_latency + prompt_tokens *
    prefill_time_per_token`` (the front end, then one step that computes the prompt: what the
    step model gives a lone prompt), so long prompts take longer to their first token.
    """

    time_to_first_token: float = 0.0
    time_to_first_token_std_dev: float = 0.0
    inter_token_latency: float = 0.0
    inter_token_latency_std_dev: float = 0.0
    time_factor_under_load: float = 1.0
    latency_model: LatencyModelName = "constant"
    frontend_latency: float = 0.0
    prefill_time_per_token: float = 0.0


@dataclass(frozen=True, slots=True)
class TimingOverride:
    """One request's own timing (a response rule's or a recording's), in seconds.

    A value given replaces the configured mean and drops its jitter; the load factor
    still applies, so a chosen answer slows down under load like any other.
    """

    time_to_first_token: float | None = None
    inter_token_latency: float | None = None


class LatencyModel:
    """Samples per-request and per-token delays.

    Timing is per sequence: TTFT and ITL depend on the prompt (in the per-token model)
    and on the load factor, not on the batch. A future iteration-level model only has
    to provide these methods.
    """

    def __init__(self, profile: LatencyProfile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng
        self.instant = (
            profile.latency_model == "constant"
            and profile.time_to_first_token <= 0.0
            and profile.inter_token_latency <= 0.0
        )
        """Every delay is zero whatever the load (no mean to jitter or scale): the pacer
        releases a request's tokens at once without asking for each delay."""

    def overridden(self, timing: TimingOverride) -> LatencyModel:
        """This model with ``timing``'s values in place of the configured means."""
        profile = self.profile
        if timing.time_to_first_token is not None:
            profile = replace(
                profile,
                latency_model="constant",
                time_to_first_token=timing.time_to_first_token,
                time_to_first_token_std_dev=0.0,
            )
        if timing.inter_token_latency is not None:
            profile = replace(
                profile,
                inter_token_latency=timing.inter_token_latency,
                inter_token_latency_std_dev=0.0,
            )
        return LatencyModel(profile, self._rng)

    def mean_first_token_delay(self, prompt_tokens: int) -> float:
        """The unjittered time to first token at a load factor of 1."""
        p = self.profile
        if p.latency_model == "per-token":
            return (
                p.frontend_latency
                + p.inter_token_latency
                + prompt_tokens * p.prefill_time_per_token
            )
        return p.time_to_first_token

    def first_token_delay(self, prompt_tokens: int, load_factor: float) -> float:
        mean = self.mean_first_token_delay(prompt_tokens)
        return self._sample(mean, self.profile.time_to_first_token_std_dev) * load_factor

    def inter_token_delay(self, load_factor: float) -> float:
        p = self.profile
        return self._sample(p.inter_token_latency, p.inter_token_latency_std_dev) * load_factor

    def fixed_inter_token_delay(self, load_factor: float) -> float | None:
        """The gap between tokens when it has no jitter, else None (draw each one)."""
        p = self.profile
        if p.inter_token_latency_std_dev <= 0.0 or p.inter_token_latency <= 0.0:
            return p.inter_token_latency * load_factor
        return None

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


def latency_profile(settings: Settings) -> LatencyProfile:
    """The latency knobs of ``settings``, as the timing model takes them."""
    return LatencyProfile(
        time_to_first_token=settings.time_to_first_token,
        time_to_first_token_std_dev=settings.time_to_first_token_std_dev,
        inter_token_latency=settings.inter_token_latency,
        inter_token_latency_std_dev=settings.inter_token_latency_std_dev,
        time_factor_under_load=settings.time_factor_under_load,
        latency_model=settings.latency_model,
        frontend_latency=settings.frontend_latency,
        prefill_time_per_token=settings.prefill_time_per_token,
    )
