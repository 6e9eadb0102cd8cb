"""How a faked histogram's observations spread over its buckets.

Each function turns a distribution of a fake-metrics entry, sampled at one instant, into
the share of observations per bucket (the finite bounds in order, then ``+Inf``) and the
mean observed value, which feeds ``_sum``. ``quantiles`` builds a distribution whose
``histogram_quantile`` reading, with Prometheus's linear interpolation inside a bucket, is
the asked value: its distribution function is a straight line within every bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from llmsim.observability.fake_quantiles import cumulative_at_bounds
from llmsim.settings.fake_entries import SeriesFake, quantile_of

Shares = tuple[list[float], float]
"""Share of observations per bucket (``+Inf`` last, summing to 1) and the mean value."""
Z99 = NormalDist().inv_cdf(0.99)


def parameters(entry: SeriesFake, elapsed: float) -> tuple[float, ...]:
    """The entry's distribution parameters at ``elapsed`` (equal tuples, equal shares)."""
    if entry.lognormal is not None:
        return (entry.lognormal.p50.at(elapsed), entry.lognormal.p99.at(elapsed))
    table = entry.quantiles if entry.quantiles is not None else entry.buckets
    assert table is not None
    return tuple(signal.at(elapsed) for signal in table.values())


def shares_for(
    entry: SeriesFake, params: tuple[float, ...], bounds: Sequence[float]
) -> Shares | None:
    """The bucket shares of the entry's distribution with ``params``; None when no bucket
    gets a positive share."""
    if entry.lognormal is not None:
        return lognormal(params[0], params[1], bounds)
    if entry.quantiles is not None:
        keys = [quantile_of(key) for key in entry.quantiles]
        return piecewise(list(zip(keys, params, strict=True)), bounds)
    assert entry.buckets is not None
    weights = {key: max(weight, 0.0) for key, weight in zip(entry.buckets, params, strict=True)}
    return explicit(weights, bounds)


def shares_at(entry: SeriesFake, bounds: Sequence[float], elapsed: float) -> Shares | None:
    """The entry's bucket shares at ``elapsed``."""
    return shares_for(entry, parameters(entry, elapsed), bounds)


def bucket_key(bound: float) -> str:
    """The ``le`` text a user writes for a bound: ``0.25``, ``2560``, ``+Inf``."""
    if math.isinf(bound):
        return "+Inf"
    return f"{bound:g}" if bound != int(bound) else str(int(bound))


def _from_cumulative(cumulative: list[float], bounds: Sequence[float]) -> Shares:
    """Per-bucket shares from the distribution function at each bound, and the mean.

    The mean takes each bucket's middle (the first bucket starts at 0, the ``+Inf``
    bucket counts as its lower bound), matching a straight line within each bucket.
    """
    shares: list[float] = []
    mean = 0.0
    below = 0.0
    lower = 0.0
    for bound, at in zip(bounds, cumulative, strict=True):
        share = max(min(at, 1.0) - below, 0.0)
        shares.append(share)
        mean += share * (lower + bound) / 2.0
        below += share
        lower = bound
    tail = max(1.0 - below, 0.0)
    shares.append(tail)
    return shares, mean + tail * lower


def lognormal(p50: float, p99: float, bounds: Sequence[float]) -> Shares:
    """A log-normal latency with the given median and 99th percentile."""
    p50 = max(p50, 1e-12)
    sigma = max(math.log(max(p99, p50) / p50), 0.0) / Z99
    if sigma == 0.0:
        cumulative = [1.0 if bound >= p50 else 0.0 for bound in bounds]
        shares, _ = _from_cumulative(cumulative, bounds)
        return shares, p50
    normal = NormalDist(math.log(p50), sigma)
    shares, _ = _from_cumulative([normal.cdf(math.log(bound)) for bound in bounds], bounds)
    return shares, math.exp(math.log(p50) + sigma * sigma / 2.0)


def explicit(weights: dict[str, float], bounds: Sequence[float]) -> Shares | None:
    """Shares given per ``le`` bound, normalised to sum to 1."""
    keys = [bucket_key(bound) for bound in (*bounds, math.inf)]
    raw = [weights.get(key, 0.0) for key in keys]
    total = sum(raw)
    if total <= 0.0:
        return None
    shares = [weight / total for weight in raw]
    mean = 0.0
    lower = 0.0
    for bound, share in zip(bounds, shares, strict=False):
        mean += share * (lower + bound) / 2.0
        lower = bound
    return shares, mean + shares[-1] * lower


def piecewise(targets: list[tuple[float, float]], bounds: Sequence[float]) -> Shares:
    """A straight line in each bucket through the ``(quantile, value)`` targets."""
    return _from_cumulative(cumulative_at_bounds(targets, bounds), bounds)
