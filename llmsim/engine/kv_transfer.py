"""Disaggregated prefill/decode: how long a decode instance waits for a prompt's KV cache.

With ``kv_transfer_params.do_remote_prefill`` a decode instance does not compute the prompt:
it pulls the KV blocks a prefill instance computed. The time to the first token is then the
transfer time, ``--kv-cache-transfer-latency`` (constant latency model) or
``--kv-cache-transfer-time-per-token`` x prompt tokens (per-token latency model), or their
sum (step latency model), each with its Gaussian jitter, instead of the prefill time.
"""

from __future__ import annotations

import random

from llmsim.engine.timing import JITTER_CLAMP
from llmsim.settings.model import Settings


def kv_transfer_delay(settings: Settings, prompt_tokens: int, rng: random.Random) -> float:
    """One sample of the time to receive ``prompt_tokens`` tokens' KV cache.

    The step model, which has both knobs at hand, adds them: a fixed set-up latency plus a
    time per prompt token.
    """
    per_token = (
        settings.kv_cache_transfer_time_per_token * prompt_tokens,
        settings.kv_cache_transfer_time_per_token_std_dev * prompt_tokens,
    )
    constant = (settings.kv_cache_transfer_latency, settings.kv_cache_transfer_latency_std_dev)
    if settings.latency_model == "per-token":
        return _sample(*per_token, rng)
    if settings.latency_model == "step":
        return _sample(*constant, rng) + _sample(*per_token, rng)
    return _sample(*constant, rng)


def _sample(mean: float, std: float, rng: random.Random) -> float:
    if std <= 0.0 or mean <= 0.0:
        return mean
    value = rng.gauss(mean, std)
    return min(max(value, mean * (1 - JITTER_CLAMP)), mean * (1 + JITTER_CLAMP))
